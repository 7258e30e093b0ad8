/** Pre-training θ0, the frozen ridge heads, and saving/loading both (lib/train/pretrain.ts). */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { CheckpointError, evaluation, Model, setNumThreads, train, type VitConfig } from '../lib';
import { tmpDir, toF64 } from './helpers';

setNumThreads(2);
const TINY: VitConfig = { arch: 'vit', imageSize: 28, patchSize: 7, inChannels: 1, dim: 16, depth: 1, heads: 2, mlpDim: 32, numClasses: 0 };
const values = (m: ReadonlyMap<string, { data(): unknown }>) => new Map([...m].map(([n, x]) => [n, Array.from(x.data() as Float32Array)]));

t.test('pretrain, saveBackbone/loadBackbone, fitHead, saveHeads/loadHeads', async (t) => {
  const dir = tmpDir(t);
  const src = await train.prepareTask('fashion', { trainLimit: 512, valLimit: 64, testLimit: 64 });
  const r = await train.pretrain({ source: src.train, config: TINY, steps: 40, batchSize: 64, lr: 3e-3, warmupSteps: 4, progress: { mode: 'none' } });
  t.same(r.config, TINY, 'the backbone config has no classifier');
  t.same([...r.theta0.keys()], [...Model.create(TINY).spec.keys()], 'θ0 holds exactly the backbone parameters (classifier dropped)');
  t.ok(r.finalLoss < Math.log(10) * 0.9, `pre-training lowers the loss below chance (${r.finalLoss.toFixed(3)} < 0.9 ln 10)`);
  const init = Model.create(TINY, { seed: 0 }).parameters();
  t.notSame(values(r.theta0).get('pos_embed'), values(init).get('pos_embed'), 'θ0 moved away from the initialization');

  // Backbone round trip: same tensors, config and metadata; the file's sha256.
  const f = path.join(dir, 'theta0.safetensors');
  train.saveBackbone(f, r, { source: 'fashion' });
  const b = train.loadBackbone(f);
  t.same(b.config, TINY);
  t.same(values(b.theta0), values(r.theta0), 'θ0 values round-trip exactly');
  t.equal(b.metadata['source'], 'fashion', 'metadata round-trips');
  t.equal(b.sha256, crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex'));
  const x = train.evalData(src.test).batches[0]!.x;
  t.same(toF64(await b.model.forward(x, b.theta0)), toF64(await r.model.forward(x, r.theta0)), 'the loaded backbone computes the same features');

  // Ridge head: its reported training accuracy is what the native evaluation of the head measures.
  const head = await train.fitHead(r, src.train, { maxSamples: src.train.count });
  t.same(head.weight.shape, [10, TINY.dim]);
  t.ok(head.normalize, 'heads act on normalized features');
  const ev = new evaluation.Evaluator(r.model, r.theta0, [{ name: 'fashion', head, val: train.evalData(src.train), test: train.evalData(src.test) }]);
  const acc = await ev.accuracy('fashion', 'val', undefined, false);
  t.ok(Math.abs(acc - head.trainAcc) < 1e-12, `head train accuracy ${head.trainAcc} equals the native evaluation ${acc}`);
  t.ok(head.trainAcc > 0.3, `the probe learns (train accuracy ${(100 * head.trainAcc).toFixed(1)}% vs 10% chance)`);

  // Heads round trip, tied to θ0 by hash.
  const hf = path.join(dir, 'heads.safetensors');
  train.saveHeads(hf, new Map([['fashion', head]]), r.theta0);
  const heads = train.loadHeads(hf, { theta0: r.theta0, features: TINY.dim });
  t.same([...heads.keys()], ['fashion']);
  t.same(Array.from(heads.get('fashion')!.weight.data() as Float32Array), Array.from(head.weight.data() as Float32Array), 'head weight round-trips');
  t.same(Array.from(heads.get('fashion')!.bias!.data() as Float32Array), Array.from(head.bias!.data() as Float32Array), 'head bias round-trips');
  t.equal(heads.get('fashion')!.normalize, true);
  t.throws(() => train.loadHeads(hf, { theta0: init }), { name: 'CheckpointError', code: 'ERR_METADATA', message: /different pre-trained model/ }, 'heads refuse another θ0');
  t.throws(() => train.loadHeads(hf, { features: 7 }), { code: 'ERR_KEY_MISMATCH', message: /takes 16 features, the backbone gives 7/ });
  t.throws(() => train.loadHeads(f), { code: 'ERR_METADATA', message: /not a tangent-edit heads file/ }, 'a backbone is not a heads file');
  t.throws(() => train.loadBackbone(hf), CheckpointError, 'a heads file is not a backbone');
  t.throws(() => train.loadHeads(path.join(dir, 'missing.safetensors')), { code: 'ERR_IO' });
});
