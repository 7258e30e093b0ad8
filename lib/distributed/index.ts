/** Scale-out over torch.distributed c10d: process groups, data parallelism, rendezvous settings, the launcher. */
export { DistributedError } from './errors';
export { ProcessGroup, backends, parseMaster, shardRange, DEFAULT_TIMEOUT_MS, DEFAULT_BUCKET_BYTES, type Backend, type ReduceOp, type ProcessGroupOptions } from './group';
export { broadcastFromRoot, reduceStep, shardOf, checkShardable } from './data-parallel';
export { resolveDistributed, threadsPerLocalRank, type DistributedSettings } from './env';
export { setDefaultProcessGroup, defaultProcessGroup, groupFor } from './context';
