#!/usr/bin/env node
/**
 * The `tangent` executable (package.json `bin`). The verbs live in lib/cli/, one file per group:
 * index.ts (program, --version, errors), runtime.ts (info, demo), checkpoints.ts (inspect, merge,
 * apply), train.ts (pretrain, finetune), eval.ts (eval, sweeps, protocol), analysis.ts
 * (disentangle, ntk).
 */
import { main } from './cli/index';

export { buildCli, main } from './cli/index';

if (require.main === module) main(process.argv);
