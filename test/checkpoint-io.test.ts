import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { CheckpointError, detectFormat, loadStateDict, Model, saveStateDict, Tensor, type StateDict } from '../lib';
import { bfloat16BitsToFloat32, float16BitsToFloat32 } from '../lib/checkpoint/dtype';
import { FIXTURES, needsTorch } from './helpers';

const PY = process.env['TANGENT_TEST_PYTHON'] ?? '/usr/bin/python3';

function values(tensor: Tensor): number[] {
  const d = tensor.data();
  if (tensor.dtype === 'float16') return Array.from(d as Uint16Array, float16BitsToFloat32);
  if (tensor.dtype === 'bfloat16') return Array.from(d as Uint16Array, bfloat16BitsToFloat32);
  return Array.from(d as ArrayLike<number | bigint>, Number);
}

function sample(): StateDict {
  return new Map<string, Tensor>([
    ['a.weight', Tensor.from(new Float32Array([1, -2, 3.5, 4]), [2, 2])],
    ['a.bias', Tensor.from(new Float64Array([0.25, -0.125]), [2])],
    ['h', Tensor.from(new Uint16Array([0x3c00, 0xc000]), [2], 'float16')],
    ['b', Tensor.from(new Uint16Array([0x3f80, 0x4040]), [2], 'bfloat16')],
    ['count', Tensor.from(new BigInt64Array([5n]), [1])],
    ['flags', Tensor.from(new Uint8Array([1, 0, 1]), [3], 'bool')],
  ]);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tangent-ckpt-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

t.test('a torch.save file written by PyTorch reads correctly, every dtype', async (t) => {
  const expected = JSON.parse(fs.readFileSync(`${FIXTURES}/torch_state_dict.json`, 'utf8')) as Record<string, { dtype: string; shape: number[]; data: number[] }>;
  t.equal(detectFormat(`${FIXTURES}/torch_state_dict.pt`), 'torch');
  const { tensors, format } = await loadStateDict(`${FIXTURES}/torch_state_dict.pt`);
  t.equal(format, 'torch');
  t.same([...tensors.keys()], Object.keys(expected), 'names in the file order');
  const pyName: Record<string, string> = { int64: 'int64', int32: 'int32', uint8: 'uint8', bool: 'bool', float16: 'float16', bfloat16: 'bfloat16', float32: 'float32', float64: 'float64' };
  for (const [name, e] of Object.entries(expected)) {
    const x = tensors.get(name)!;
    t.equal(x.dtype, pyName[e.dtype], `${name} dtype`);
    t.same(x.shape, e.shape, `${name} shape`);
    t.same(values(x), e.data, `${name} values`);
  }
});

t.test('round trips across formats: safetensors, sharded, .pt', async (t) => {
  const sd = sample();
  for (const [file, fmt] of [
    ['rt.safetensors', 'safetensors'],
    ['rt-sharded', 'sharded'],
    ['rt.pt', 'torch'],
  ] as const) {
    const f = path.join(tmp, file);
    await saveStateDict(f, sd, { maxShardBytes: 16, metadata: { note: 'x' } });
    const back = await loadStateDict(f);
    t.equal(back.format, fmt, `${file} format`);
    t.same([...back.tensors.keys()], [...sd.keys()], `${file}: names and order`);
    for (const [n, x] of sd) {
      t.equal(back.tensors.get(n)!.dtype, x.dtype, `${file}: ${n} dtype`);
      t.same(values(back.tensors.get(n)!), values(x), `${file}: ${n} values`);
    }
    t.same(fs.readdirSync(tmp).filter((x) => x.endsWith('.tmp')), [], 'no temporary files left');
  }
  t.ok(fs.readdirSync(path.join(tmp, 'rt-sharded')).length > 2, 'the sharded output has several shards');
});

t.test('a TorchScript module is a checkpoint too (its parameters and buffers)', async (t) => {
  const { tensors, format } = await loadStateDict(`${FIXTURES}/tiny32.pt`);
  t.equal(format, 'torchscript');
  const m = await Model.load(`${FIXTURES}/tiny32.pt`, { trustCode: true });
  t.same([...tensors.keys()], [...m.spec.keys(), 'scale']);
  t.same(values(tensors.get('fc2.bias')!), values(m.parameters().get('fc2.bias')!));
});

t.test('PyTorch reads what we write', { skip: needsTorch() }, async (t) => {
  const f = path.join(tmp, 'ours.pt');
  await saveStateDict(f, sample());
  const script = `
import json, sys, torch
sd = torch.load(sys.argv[1])
print(json.dumps({k: [str(v.dtype).replace('torch.', ''), list(v.shape), v.float().flatten().tolist()] for k, v in sd.items()}))`;
  const r = spawnSync(PY, ['-c', script, f], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as Record<string, [string, number[], number[]]>;
  for (const [n, x] of sample()) {
    t.equal(got[n]![0], x.dtype, `${n} dtype in PyTorch`);
    t.same(got[n]![2], values(x), `${n} values in PyTorch`);
  }
});

t.test('bad .pt inputs give CheckpointErrors naming the file', async (t) => {
  const notZip = path.join(tmp, 'bad.pt');
  fs.writeFileSync(notZip, 'hello world, not a zip');
  await t.rejects(loadStateDict(notZip), CheckpointError);
  await t.rejects(loadStateDict(notZip), new RegExp(notZip.replace(/[.]/g, '\\.')));
  const trunc = path.join(tmp, 'trunc.pt');
  fs.writeFileSync(trunc, fs.readFileSync(`${FIXTURES}/torch_state_dict.pt`).subarray(0, 1000));
  await t.rejects(loadStateDict(trunc), { name: 'CheckpointError', message: /trunc\.pt/ });
  await t.rejects(loadStateDict(path.join(tmp, 'missing.pt')), { code: 'ERR_NOT_FOUND' });
});
