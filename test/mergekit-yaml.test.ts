// mergekit configs as-is (issue 26, item 2): the examples of mergekit's README and docs, typed by
// hand with local paths, run on small Llama-layout checkpoints (sharded bf16 in, sharded bf16
// out) and compared tensor by tensor with in-memory merges whose per-tensor parameters are worked
// out here by hand (gradients interpolated over layers, filters by tensor name, slices renumbering
// layers); every mergekit key that is not supported is refused by name.
// Run: npx tap test/mergekit-yaml.test.ts
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { ArgumentError, loadStateDict, mergeCheckpoints, mergeTensor, parseMergekitConfig, runMergekit, saveStateDict, Tensor, type MergeOptions, type StateDict } from '../lib';
import { randn } from './helpers';
import { json, run as runCli, skipWithoutDist } from './cli-fixtures';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-mergekit-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const L = 4;
const D = 8;
const V = 12;
/** A Llama-layout state dict (bf16), `shift` making each model different. */
function llama(seed: number, layers = L): StateDict {
  const sd: StateDict = new Map();
  let s = seed * 1000;
  const w = (shape: number[]) => {
    // float32 → bfloat16, rounded to nearest even.
    const u = new Uint32Array(Float32Array.from(randn(shape.reduce((a, b) => a * b, 1), ++s)).buffer);
    return Tensor.from(Uint16Array.from(u, (x) => (x + 0x7fff + ((x >>> 16) & 1)) >>> 16), shape, 'bfloat16');
  };
  sd.set('model.embed_tokens.weight', w([V, D]));
  for (let i = 0; i < layers; i++) {
    sd.set(`model.layers.${i}.input_layernorm.weight`, w([D]));
    sd.set(`model.layers.${i}.self_attn.q_proj.weight`, w([D, D]));
    sd.set(`model.layers.${i}.mlp.up_proj.weight`, w([2 * D, D]));
  }
  sd.set('model.norm.weight', w([D]));
  sd.set('lm_head.weight', w([V, D]));
  return sd;
}
const models: Record<string, StateDict> = {};
t.before(async () => {
  for (const [name, seed, layers] of [['base', 1, L], ['a', 2, L], ['b', 3, L], ['c', 4, L], ['deep', 5, 6]] as const) {
    models[name] = llama(seed, layers);
    const d = path.join(dir, name);
    await saveStateDict(d, models[name]!, { maxShardBytes: 600 }); // several shards + model.safetensors.index.json
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], num_hidden_layers: layers, name }));
    fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify({ tokenizer_of: name }));
  }
});

/** Runs a mergekit YAML (as text) from `dir`, output the folder `out`; returns the merged state dict and the report. */
async function run(yaml: string, out: string) {
  const file = path.join(dir, `${out}.yml`);
  fs.writeFileSync(file, yaml);
  const p = parseMergekitConfig(YAML.parse(yaml), { output: out, source: file });
  const report = await runMergekit(p, { configDir: dir, configFile: file });
  return { got: (await loadStateDict(path.join(dir, out))).tensors, report };
}

/** The merge of one tensor, in memory, with options worked out by hand. */
async function want(name: string, base: string | null, from: string[], o: MergeOptions, srcName = name): Promise<Tensor> {
  return mergeTensor(name, base ? models[base]!.get(srcName)! : null, from.map((m) => models[m]!.get(srcName)!), { compute: 'float32', ...o });
}
const bits = (x: Tensor) => Array.from(x.data() as Uint16Array);
/** mergekit's gradient: a list interpolated at t = layer / (layers − 1). */
const grad = (g: number[], tt: number) => {
  const s = tt * (g.length - 1);
  const i0 = Math.floor(s);
  const i1 = Math.min(g.length - 1, i0 + 1);
  return (1 - (s - i0)) * g[i0]! + (s - i0) * g[i1]!;
};

t.test('TIES with density and weight gradients and a filtered weight (mergekit README)', async (t) => {
  const { got, report } = await run(
    `models:
  - model: a
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: b
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: c
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: base
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
shard_size: 1000 # tangent-edit's key (mergekit: --out-shard-size)
`,
    'ties-out',
  );
  t.ok(report.index && report.shards!.length > 1, `sharded output: ${report.shards!.length} shards + ${path.basename(report.index!)}`);
  t.same(report.copied, ['config.json'], "the base's config.json beside the shards");
  t.equal(got.size, models.base!.size, 'every tensor of the base written');
  // Layer 2 of 4: t = 2/3. Weights: a 1, b grad([0, .3, .7, 1], 2/3) = 0.7, c 0.5 on mlp tensors, 0 elsewhere.
  t.equal(grad([0, 0.3, 0.7, 1], 2 / 3), 0.7, 'the weight gradient at layer 2 of 4 is its third entry');
  for (const n of ['model.layers.2.mlp.up_proj.weight', 'model.layers.2.self_attn.q_proj.weight']) {
    const tt = 2 / 3;
    const o: MergeOptions = { method: 'ties', weights: [1, grad([0, 0.3, 0.7, 1], tt), n.includes('mlp') ? 0.5 : 0], density: [grad([1, 0.7, 0.1], tt), 0.5, 0.33], normalize: true, outDtype: 'bfloat16' };
    t.same(bits(got.get(n)!), bits(await want(n, 'base', ['a', 'b', 'c'], o)), `${n}: weights [1, 0.7, ${n.includes('mlp') ? '0.5 (filter mlp)' : '0 (the fallback)'}], densities [${grad([1, 0.7, 0.1], tt).toFixed(3)}, 0.5, 0.33]`);
  }
  // Embeddings come before the layers (t = 0), the final norm and lm_head after them (t = 1).
  const e = 'model.embed_tokens.weight';
  t.same(bits(got.get(e)!), bits(await want(e, 'base', ['a', 'b', 'c'], { method: 'ties', weights: [1, 0, 0], density: [1, 0.5, 0.33], normalize: true, outDtype: 'bfloat16' })), 'embed_tokens at t = 0: weights [1, 0, 0], densities [1, 0.5, 0.33]');
  const h = 'lm_head.weight';
  t.same(bits(got.get(h)!), bits(await want(h, 'base', ['a', 'b', 'c'], { method: 'ties', weights: [1, 1, 0], density: [0.1, 0.5, 0.33], normalize: true, outDtype: 'bfloat16' })), 'lm_head at t = 1: weights [1, 1, 0], densities [0.1, 0.5, 0.33]');
});

t.test('SLERP over slices with filtered t gradients (mergekit README)', async (t) => {
  const { got } = await run(
    `slices:
  - sources:
      - model: a
        layer_range: [0, ${L}]
      - model: b
        layer_range: [0, ${L}]
merge_method: slerp
base_model: a
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: bfloat16
`,
    'slerp-out',
  );
  for (let i = 0; i < L; i++) {
    const tt = i / (L - 1);
    for (const [n, g] of [[`model.layers.${i}.self_attn.q_proj.weight`, [0, 0.5, 0.3, 0.7, 1]], [`model.layers.${i}.mlp.up_proj.weight`, [1, 0.5, 0.7, 0.3, 0]], [`model.layers.${i}.input_layernorm.weight`, [0.5]]] as const) {
      const tv = grad([...g], tt);
      t.same(bits(got.get(n)!), bits(await want(n, 'a', ['b'], { method: 'slerp', t: tv, outDtype: 'bfloat16' })), `${n}: t = ${tv.toFixed(4)} (layer ${i} of ${L}, base a)`);
    }
  }
  t.same(bits(got.get('lm_head.weight')!), bits(await want('lm_head.weight', 'a', ['b'], { method: 'slerp', t: 0.5, outDtype: 'bfloat16' })), 'lm_head: the fallback t');
});

t.test('passthrough frankenmerge: slices renumber the layers (mergekit docs)', async (t) => {
  const { got } = await run(
    `slices:
  - sources:
    - model: a
      layer_range: [0, 3]
  - sources:
    - model: deep
      layer_range: [2, 6]
merge_method: passthrough
dtype: bfloat16
tokenizer_source: a
`,
    'franken-out',
  );
  const layers = new Set([...got.keys()].map((n) => /layers\.(\d+)\./.exec(n)?.[1]).filter(Boolean));
  t.equal(layers.size, 7, '3 + 4 layers');
  for (let i = 0; i < 7; i++) {
    const [src, j] = i < 3 ? ['a', i] : ['deep', i - 3 + 2];
    for (const part of ['self_attn.q_proj.weight', 'mlp.up_proj.weight', 'input_layernorm.weight'])
      t.same(bits(got.get(`model.layers.${i}.${part}`)!), bits(models[src]!.get(`model.layers.${j}.${part}`)!), `output layer ${i}.${part} = ${src}'s layer ${j}`);
  }
  t.same(bits(got.get('model.embed_tokens.weight')!), bits(models.a!.get('model.embed_tokens.weight')!), 'embeddings from the first slice (a)');
  t.same(bits(got.get('model.norm.weight')!), bits(models.deep!.get('model.norm.weight')!), 'the final norm from the last slice (deep)');
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'franken-out', 'tokenizer.json'), 'utf8')), { tokenizer_of: 'a' }, 'tokenizer_source: a copies its tokenizer');
  // Found loading a frankenmerge with transformers: a config.json still saying 4 layers loads 4 of the 7, silently.
  t.same(JSON.parse(fs.readFileSync(path.join(dir, 'franken-out', 'config.json'), 'utf8')), { architectures: ['LlamaForCausalLM'], num_hidden_layers: 7, name: 'a', torch_dtype: 'bfloat16' },
    "config.json: the first model's, its num_hidden_layers set to the merge's 7 and its torch_dtype to the merge's dtype (as mergekit)");
});

t.test('linear, task_arithmetic, dare_ties (mergekit defaults), nuslerp and model_stock run as mergekit configs', async (t) => {
  const n = 'model.layers.1.mlp.up_proj.weight';
  const cases: Array<[string, string, string | null, string[], MergeOptions]> = [
    ['linear', 'models:\n  - model: a\n    parameters: { weight: 2 }\n  - model: b\n    parameters: { weight: 1 }\nmerge_method: linear\ndtype: float32\nout_dtype: bfloat16\n', null, ['a', 'b'], { method: 'linear', weights: [2, 1], normalize: true }],
    ['task_arithmetic', 'models:\n  - model: a\n    parameters: { weight: 0.5 }\n  - model: b\n    parameters: { weight: 0.3 }\nmerge_method: task_arithmetic\nbase_model: base\nparameters: { lambda: 0.9 }\ndtype: bfloat16\n', 'base', ['a', 'b'], { method: 'task_arithmetic', weights: [0.5, 0.3], lambda: 0.9 }],
    ['dare_ties at density 1', 'models:\n  - model: base\n  - model: a\n    parameters: { weight: 0.5, density: 1 }\n  - model: b\n    parameters: { weight: 0.5, density: 1 }\nmerge_method: dare_ties\nbase_model: base\ndtype: bfloat16\n', 'base', ['a', 'b'], { method: 'dare_ties', weights: [0.5, 0.5], density: [1, 1], normalize: false }],
    ['nuslerp', 'models:\n  - model: a\n    parameters: { weight: 0.25 }\n  - model: b\n    parameters: { weight: 0.75 }\nmerge_method: nuslerp\ndtype: bfloat16\n', null, ['a', 'b'], { method: 'nuslerp', weights: [0.25, 0.75] }],
    ['model_stock', 'models:\n  - model: a\n  - model: b\n  - model: c\nmerge_method: model_stock\nbase_model: base\ndtype: bfloat16\n', 'base', ['a', 'b', 'c'], { method: 'model_stock' }],
  ];
  for (const [label, yaml, base, from, o] of cases) {
    const { got } = await run(yaml, `case-${label.replace(/\W+/g, '-')}`);
    t.same(bits(got.get(n)!), bits(await want(n, base, from, { ...o, outDtype: 'bfloat16' })), `${label}: ${n} as the in-memory merge`);
  }
});

t.test('models: over single-file checkpoints without numbered layers merges every tensor by name', async (t) => {
  // Found running the CLI on plain .safetensors files: the layer ranges filled in for `models:` were [0, 0] and refused.
  const flat = (seed: number): StateDict => new Map([
    ['encoder.weight', Tensor.from(Float32Array.from(randn(24, seed)), [4, 6])],
    ['head.bias', Tensor.from(Float32Array.from(randn(4, seed + 9)), [4])],
  ]);
  const sds = [1, 2, 3].map(flat);
  for (const [k, sd] of sds.entries()) await saveStateDict(path.join(dir, `flat${k}.safetensors`), sd);
  const yaml = 'merge_method: ties\nbase_model: flat0.safetensors\nmodels:\n  - model: flat1.safetensors\n    parameters: { weight: 1, density: 0.5 }\n  - model: flat2.safetensors\n    parameters: { weight: 0.5, density: 0.5 }\ndtype: float32\n';
  const file = path.join(dir, 'flat.yml');
  fs.writeFileSync(file, yaml);
  const out = path.join(dir, 'flat-out.safetensors');
  const report = await runMergekit(parseMergekitConfig(YAML.parse(yaml), { output: out, source: file }), { configDir: dir, configFile: file });
  t.equal(report.tensors, 2, 'both tensors merged');
  const got = (await loadStateDict(out)).tensors;
  for (const n of ['encoder.weight', 'head.bias']) {
    const w = await mergeTensor(n, sds[0]!.get(n)!, [sds[1]!.get(n)!, sds[2]!.get(n)!], { method: 'ties', weights: [1, 0.5], density: [0.5, 0.5] });
    t.same([...(got.get(n)!.data() as Float32Array)], [...(w.data() as Float32Array)], `${n}: the TIES merge`);
  }
});

t.test('the library call: mergeCheckpoints(mergekit config) with output in it', async (t) => {
  const cfg = { merge_method: 'linear', models: [{ model: path.join(dir, 'a'), parameters: { weight: 1 } }, { model: path.join(dir, 'b'), parameters: { weight: 1 } }], dtype: 'bfloat16', output: path.join(dir, 'lib-out') };
  const report = await mergeCheckpoints(cfg as never);
  t.ok(report.index, 'sharded');
  const got = (await loadStateDict(path.join(dir, 'lib-out'))).tensors;
  const n = 'lm_head.weight';
  t.same(bits(got.get(n)!), bits(await want(n, null, ['a', 'b'], { method: 'linear', weights: [1, 1], outDtype: 'bfloat16' })), 'linear mean');
});

t.test('refused by name, before any file is written', async (t) => {
  const base = { models: [{ model: 'a', parameters: { weight: 1 } }, { model: 'b', parameters: { weight: 1 } }], merge_method: 'linear' };
  const cases: Array<[object, RegExp]> = [
    [{ ...base, tokenizer: { source: 'union' } }, /tokenizer: not supported/],
    [{ ...base, chat_template: 'chatml' }, /chat_template: not supported/],
    [{ ...base, merge_method: 'arcee_fusion' }, /arcee_fusion is a mergekit method tangent-edit does not implement/],
    [{ ...base, merge_method: 'frobnicate' }, /unknown method "frobnicate"/],
    [{ ...base, tokenizer_source: 'union' }, /tokenizer_source: "union" is not supported/],
    [{ ...base, parameters: { t: 0.5 } }, /parameters\.t: linear takes no parameter t/],
    [{ ...base, some_key: 1 }, /some_key/],
    [{ ...base, models: [{ model: 'a' }, { model: 'b' }] }, /weight: linear needs a weight for a/],
    [{ models: [{ model: 'a' }], slices: [{ sources: [{ model: 'a', layer_range: [0, 1] }] }], merge_method: 'passthrough' }, /give models or slices, not both/],
    [{ ...base, models: [{ model: { model: 'a', lora: 'x' } }] }, /a model given as an object/],
    [{ ...base, merge_method: 'model_stock', base_model: 'base', parameters: { filter_wise: true } }, /filter_wise/],
    [{ ...base, merge_method: 'slerp', base_model: 'a', models: [{ model: 'a' }, { model: 'b' }], slices: undefined, parameters: { t: 0.5, lambda: 2 } }, /slerp takes no parameter lambda/],
  ];
  for (const [doc, msg] of cases) {
    const out = `refused-${Math.random().toString(36).slice(2)}`;
    await t.rejects(
      (async () => {
        const p = parseMergekitConfig(JSON.parse(JSON.stringify(doc)), { output: out, source: 'cfg.yml' });
        await runMergekit(p, { configDir: dir });
      })(),
      { name: 'ArgumentError', message: msg },
      String(msg),
    );
    t.notOk(fs.existsSync(path.join(dir, out)), `${msg}: no output`);
  }
  t.throws(() => parseMergekitConfig({ ...base }), ArgumentError, 'no output anywhere: refused');
});

t.test('the CLI: tangent merge --config mergekit.yml --output DIR --json reports the index and the tensor count', { skip: skipWithoutDist }, async (t) => {
  const file = path.join(dir, 'cli.yml');
  fs.writeFileSync(file, 'models:\n  - model: a\n    parameters:\n      weight: 1\n      density: 0.5\n  - model: b\n    parameters:\n      weight: 0.5\n      density: 0.5\nmerge_method: ties\nbase_model: base\ntokenizer_source: base\ndtype: bfloat16\n');
  const r = runCli('merge', '--config', file, '--output', 'cli-out', '--json', '--progress', 'none');
  t.equal(r.status, 0, r.stderr);
  const j = json(r);
  t.equal(j.tensors, models.base!.size, 'tensor count');
  t.equal(j.index, path.join(dir, 'cli-out', 'model.safetensors.index.json'), 'the index');
  t.same(j.copied, ['config.json', 'tokenizer.json'], 'config.json and the base tokenizer copied');
  const got = (await loadStateDict(path.join(dir, 'cli-out'))).tensors;
  const n = 'model.layers.3.self_attn.q_proj.weight';
  t.same(bits(got.get(n)!), bits(await want(n, 'base', ['a', 'b'], { method: 'ties', weights: [1, 0.5], density: [0.5, 0.5], normalize: true, outDtype: 'bfloat16' })), `${n} as the in-memory TIES`);
  const bad = runCli('merge', '--config', file, '--json');
  t.not(bad.status, 0, 'no --output and none in the config: refused');
  t.match(bad.stderr, /output: where to write the merge is missing/);
  const lines = runCli('merge', '--config', file, '--output', 'cli-out2', '--progress', 'lines');
  t.equal(lines.status, 0, lines.stderr);
  t.match(lines.stderr, /merge: [\d.]+\/[\d.]+ MiB \(100%\), [\d.]+ MiB\/s, elapsed \d+s, ETA \d+s — done/, 'progress in MiB written, MiB/s and ETA');
  const threads = runCli('merge', '--config', file, '--output', 'cli-out3', '--threads', '1', '--device', 'cpu', '--progress', 'none');
  t.equal(threads.status, 0, threads.stderr);
  t.same(bits((await loadStateDict(path.join(dir, 'cli-out3'))).tensors.get(n)!), bits(got.get(n)!), '--threads 1 --device cpu: the same bits (chunked sums do not depend on threads)');
  const dev = runCli('merge', '--config', file, '--output', 'cli-out4', '--device', 'tpu');
  t.not(dev.status, 0);
  t.match(dev.stderr, /--device: expected 'cpu', 'cuda' or 'cuda:N', got "tpu"/, 'an unknown device is refused by name');
  t.notOk(fs.existsSync(path.join(dir, 'cli-out4')), 'nothing written');
});
