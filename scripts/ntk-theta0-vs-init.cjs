// The demo's NTK localization (step 4) on a saved θ0, at θ0 and at the model's initial parameters
// (seed 0), on the same inputs. Usage: node scripts/ntk-theta0-vs-init.cjs [theta0.safetensors]
// (default: docs/results/work/theta0.safetensors, written by `npm run demo -- --out docs/results`).
const path = require('node:path');
const { ntkLocalization } = require('../dist/lib/analysis');
const { taskInputs } = require('../dist/lib/analysis/inputs');
const { loadBackbone } = require('../dist/lib/train/pretrain');
const { setNumThreads } = require('../dist/lib/runtime');
(async () => {
  setNumThreads(2);
  const bb = loadBackbone(process.argv[2] ?? path.join(__dirname, '..', 'docs', 'results', 'work', 'theta0.safetensors'));
  const tasks = ['mnist', 'letters', 'greek', 'typed-digits'];
  const pooled = await Promise.all(tasks.map(async (name, i) => ({ name, x: (await taskInputs(name, 60, 10 + i)).x })));
  const a = await ntkLocalization(bb.model, pooled, { topK: 20, params: bb.theta0 });
  const b = await ntkLocalization(bb.model, pooled, { topK: 20 });
  console.log(JSON.stringify({ theta0: a.meanMaxEnergy, init: b.meanMaxEnergy, eigTheta0: a.eigenvalues.slice(0, 3), eigInit: b.eigenvalues.slice(0, 3) }));
})();
