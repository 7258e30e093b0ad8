/** Installing and locating the native addon: libtorch discovery, the build, the loader's diagnosis. */
export { findLibtorch, noLibtorchMessage, candidateLine, torchConfigDir, REBUILD_COMMAND, type Candidate, type Discovery } from './libtorch';
export { install, installMain, type InstallOptions, type InstallResult } from './build';
export { loadAddon, diagnose, AddonLoadFailure } from './load';
export { buildPaths, packageRoot, readLibtorchRecord, readInstallStatus, describeRecord, type LibtorchRecord, type InstallStatus } from './record';
