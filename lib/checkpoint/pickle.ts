/**
 * The pickle machinery of torch.save and TorchScript archives: a minimal, allow-listed pickle VM
 * (read side) and the protocol-2 encoder of state dicts (write side).
 *
 * The VM understands only the opcodes torch.save and torch.jit.save emit and resolves only an
 * allow-list of globals (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the typed
 * `torch.*Storage` classes, and for TorchScript archives the `torch.jit._pickle` list builders and
 * `__torch__.*` module classes, which become inert {@link PyObject}s holding their attribute dict).
 * Nothing is imported, called or executed: an unknown global is an error, a class's
 * `__setstate__` is never run (a module whose state is not a plain attribute dict is refused, with
 * a pointer to `Model.load`, the one API that runs TorchScript).
 *
 * Limits that live here: integers of at most 16 bytes (LONG1/LONG4), no recursion (the VM is a
 * loop; containers are built without spreading arguments), and tensors stay lazy
 * {@link TensorView}s: no storage byte is read or copied by the VM.
 */
import type { DType } from './dtype';
import { DTYPE_BYTES, numel } from './dtype';
import { CheckpointError } from './errors';
import { escapeControl, quote } from './escape';

// ---------------------------------------------------------------------------
// Dtypes <-> torch storage classes

export const STORAGE_DTYPES: Readonly<Record<string, DType>> = Object.freeze({
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
});

export const DTYPE_STORAGES: Readonly<Record<DType, string>> = Object.freeze(
  Object.fromEntries(Object.entries(STORAGE_DTYPES).map(([s, d]) => [d, s])) as Record<DType, string>,
);

// ---------------------------------------------------------------------------
// Values the VM produces

/** An allow-listed global (never resolved to anything executable). */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string, readonly storageDType?: DType, readonly isClass = false) {}
  toString(): string { return `${this.module}.${this.name}`; }
}
export class PyTuple { constructor(readonly items: unknown[]) {} }
export class PyList { constructor(readonly items: unknown[]) {} }
/** dict / OrderedDict, insertion-ordered; keys are strings, numbers, booleans or null. */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
  constructor(readonly ordered: boolean) {}
}
/** An instance of a TorchScript class (`__torch__.*`): its class name and attribute dict, nothing more. */
export class PyObject {
  state: PyDict | undefined;
  constructor(readonly cls: PyGlobal) {}
}
/** A storage named by a persistent id; its bytes are read later, by the caller. */
export class StorageRef {
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number) {}
  get nbytes(): number { return this.numel * DTYPE_BYTES[this.dtype]; }
}
/** `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, ...)`, not yet materialized. */
export class TensorView {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
    readonly requiresGrad: boolean,
  ) {}
  get nbytes(): number { return numel(this.size) * DTYPE_BYTES[this.storage.dtype]; }
}

const ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
]);

/** TorchScript's typed-container builders: plain data in, plain data out. */
const TORCHSCRIPT_GLOBALS: ReadonlySet<string> = new Set([
  'torch.jit._pickle.build_intlist',
  'torch.jit._pickle.build_doublelist',
  'torch.jit._pickle.build_boollist',
  'torch.jit._pickle.build_tensorlist',
  'torch.jit._pickle.restore_type_tag',
]);

/** LONG1/LONG4 integers longer than this are refused (torch never writes them; BigInt parsing is quadratic). */
const MAX_LONG_BYTES = 16;

const OPNAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** A short, terminal-safe description of a value for messages. */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (typeof v === 'string') return `str ${quote(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint') return `int/float ${String(v)}`;
  if (typeof v === 'boolean') return `bool ${v ? 'True' : 'False'}`;
  if (v instanceof TensorView) return 'tensor';
  if (v instanceof PyDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyList) return `list of ${v.items.length}`;
  if (v instanceof PyGlobal) return `global ${escapeControl(v.toString())}`;
  if (v instanceof PyObject) return `object of class ${escapeControl(v.cls.toString())}`;
  if (v instanceof StorageRef) return 'storage';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v;
}

export function keyRepr(k: unknown): string {
  return typeof k === 'string' ? quote(k) : describe(k);
}

export interface UnpicklerOptions {
  /** The record's name in messages (`data.pkl`). */
  record?: string;
  /** Accept what torch.jit.save writes: `__torch__.*` classes (NEWOBJ + BUILD) and the typed list builders. */
  torchScript?: boolean;
}

const MODEL_LOAD_HINT = 'only Model.load can restore it, and Model.load runs the archive\'s TorchScript code (see docs/security.md)';

/** The allow-listed pickle VM. `load()` returns the root object. */
export class Unpickler {
  private pos = 0;
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private op = 0;
  private opPos = 0;
  private readonly record: string;
  private readonly torchScript: boolean;

  constructor(private readonly file: string, private readonly buf: Uint8Array, opts: UnpicklerOptions = {}) {
    this.record = opts.record ?? 'data.pkl';
    this.torchScript = opts.torchScript === true;
  }

  private fail(detail: string, code: 'ERR_SCHEMA' | 'ERR_TRUNCATED' | 'ERR_DTYPE' | 'ERR_LIMIT' = 'ERR_SCHEMA'): never {
    const name = OPNAMES[this.op] ?? `0x${this.op.toString(16).padStart(2, '0')}`;
    throw new CheckpointError(code, `${this.record}: ${detail} (opcode ${name} at offset ${this.opPos})`, { file: this.file });
  }

  private take(n: number): Uint8Array {
    if (n < 0 || this.pos + n > this.buf.length) this.fail(`pickle ends early: need ${n} more bytes`, 'ERR_TRUNCATED');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  private u8(): number { return this.take(1)[0]!; }
  private u16(): number { const b = this.take(2); return b[0]! | (b[1]! << 8); }
  private u32(): number { const b = this.take(4); return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0; }
  private i32(): number { return this.u32() | 0; }
  private u64(): number {
    const lo = this.u32();
    const hi = this.u32();
    const v = hi * 2 ** 32 + lo;
    if (!Number.isSafeInteger(v)) this.fail('length out of range');
    return v;
  }
  private line(): string {
    const start = this.pos;
    while (this.pos < this.buf.length && this.buf[this.pos] !== 0x0a) this.pos++;
    if (this.pos >= this.buf.length) this.fail('pickle ends inside a text line', 'ERR_TRUNCATED');
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + start, this.pos - start).toString('utf8');
    this.pos++;
    return s;
  }
  private utf8(n: number): string {
    const b = this.take(n);
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
  }

  private push(v: unknown): void { this.stack.push(v); }
  private pop(): unknown {
    if (this.stack.length === 0) this.fail(this.metastack.length > 0 ? 'unexpected MARK on the stack' : 'stack underflow');
    return this.stack.pop();
  }
  private top(): unknown {
    if (this.stack.length === 0) this.fail('stack underflow');
    return this.stack[this.stack.length - 1];
  }
  private popMark(): unknown[] {
    const items = this.stack;
    const prev = this.metastack.pop();
    if (prev === undefined) this.fail('no MARK on the stack');
    this.stack = prev;
    return items;
  }

  private global(module: string, name: string): PyGlobal {
    const full = `${module}.${name}`;
    if (ALLOWED_GLOBALS.has(full)) return new PyGlobal(module, name);
    if (module === 'torch' && /^[A-Za-z0-9]+Storage$/.test(name)) {
      const dtype = STORAGE_DTYPES[name];
      if (dtype === undefined) this.fail(`unsupported storage type torch.${escapeControl(name)}`, 'ERR_DTYPE');
      return new PyGlobal(module, name, dtype);
    }
    if (this.torchScript) {
      if (TORCHSCRIPT_GLOBALS.has(full)) return new PyGlobal(module, name);
      if ((module === '__torch__' || module.startsWith('__torch__.')) && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        return new PyGlobal(module, name, undefined, true);
      }
      this.fail(`refusing to load global ${quote(full)}: a TorchScript archive is read as data (module classes and tensors only); ${MODEL_LOAD_HINT}`);
    }
    this.fail(`refusing to load global ${quote(full)}: only tensors and (Ordered)dicts are allowed in a safe state-dict load`);
  }

  private dictSet(d: PyDict, key: unknown, value: unknown): void {
    if (!(typeof key === 'string' || typeof key === 'number' || typeof key === 'boolean' || key === null || typeof key === 'bigint')) {
      this.fail(`unsupported dict key (${describe(key)})`);
    }
    if (d.map.has(key)) {
      throw new CheckpointError('ERR_DUPLICATE_KEY', `${this.record}: key ${keyRepr(key)} is set twice in one dict (offset ${this.opPos})`,
        typeof key === 'string' ? { file: this.file, tensor: key } : { file: this.file });
    }
    d.map.set(key, value);
  }

  private int(v: unknown, what: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(`${what} must be an integer, got ${describe(v)}`);
    return v;
  }

  private intTuple(v: unknown, what: string): number[] {
    if (!(v instanceof PyTuple)) this.fail(`${what} must be a tuple, got ${describe(v)}`);
    return v.items.map((x) => this.int(x, what));
  }

  private call(fn: unknown, argsV: unknown): unknown {
    if (!(fn instanceof PyGlobal)) this.fail(`cannot call ${describe(fn)}`);
    if (!(argsV instanceof PyTuple)) this.fail(`arguments of ${escapeControl(fn.toString())} must be a tuple, got ${describe(argsV)}`);
    const args = argsV.items;
    switch (fn.toString()) {
      case 'collections.OrderedDict': {
        const d = new PyDict(true);
        if (args.length === 1 && args[0] instanceof PyList) {
          for (const pair of args[0].items) {
            if (!(pair instanceof PyTuple) || pair.items.length !== 2) this.fail('OrderedDict() argument must be a list of pairs');
            this.dictSet(d, pair.items[0], pair.items[1]);
          }
        } else if (args.length !== 0) this.fail(`unsupported OrderedDict() arguments (${args.map(describe).join(', ')})`);
        return d;
      }
      case 'torch._utils._rebuild_tensor_v2':
      case 'torch._utils._rebuild_tensor': {
        if (args.length < 4) this.fail(`${fn.toString()} expects at least 4 arguments, got ${args.length}`);
        const storage = args[0];
        if (!(storage instanceof StorageRef)) this.fail(`${fn.toString()}: first argument must be a storage, got ${describe(storage)}`);
        const offset = this.int(args[1], 'storage_offset');
        const size = this.intTuple(args[2], 'size');
        const stride = this.intTuple(args[3], 'stride');
        if (size.length !== stride.length) this.fail(`size (${size.length} dims) and stride (${stride.length} dims) differ in length`);
        if (size.some((d) => d < 0) || stride.some((d) => d < 0) || offset < 0) this.fail('negative size, stride or storage offset');
        return new TensorView(storage, offset, size, stride, args[4] === true);
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state': {
        const t = args[0];
        if (args.length < 1 || !(t instanceof TensorView)) this.fail(`${fn.toString()}: first argument must be a tensor`);
        return new TensorView(t.storage, t.offset, t.size, t.stride, args[1] === true);
      }
      case 'torch.jit._pickle.build_intlist':
      case 'torch.jit._pickle.build_doublelist':
      case 'torch.jit._pickle.build_boollist':
      case 'torch.jit._pickle.build_tensorlist': {
        if (args.length !== 1 || !(args[0] instanceof PyList)) this.fail(`${fn.toString()} expects one list`);
        return args[0];
      }
      case 'torch.jit._pickle.restore_type_tag': {
        if (args.length !== 2 || typeof args[1] !== 'string') this.fail(`${fn.toString()} expects (object, type string)`);
        return args[0];
      }
      default:
        this.fail(`${escapeControl(fn.toString())} cannot be called`);
    }
  }

  private persistentLoad(pid: unknown): StorageRef {
    if (!(pid instanceof PyTuple) || pid.items.length < 5 || pid.items[0] !== 'storage') {
      this.fail(`unsupported persistent id (${describe(pid)}); expected ('storage', type, key, location, numel)`);
    }
    const [, type, key, , numelV] = pid.items;
    if (!(type instanceof PyGlobal) || type.storageDType === undefined) this.fail(`persistent id storage type must be a torch.*Storage class, got ${describe(type)}`);
    if (typeof key !== 'string') this.fail(`persistent id storage key must be a string, got ${describe(key)}`);
    const count = this.int(numelV, 'storage numel');
    if (count < 0) this.fail(`storage numel ${count} is negative`);
    return new StorageRef(key, type.storageDType, count);
  }

  load(): unknown {
    const buf = this.buf;
    while (this.pos < buf.length) {
      this.opPos = this.pos;
      const op = (this.op = buf[this.pos++]!);
      switch (op) {
        case 0x80: { // PROTO
          const proto = this.u8();
          if (proto < 2 || proto > 5) this.fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: this.u64(); break; // FRAME: length of the next frame, irrelevant here
        case 0x63: { // GLOBAL
          const module = this.line();
          const name = this.line();
          this.push(this.global(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL needs two strings');
          this.push(this.global(module, name));
          break;
        }
        case 0x71: this.memo.set(this.u8(), this.top()); break; // BINPUT
        case 0x72: this.memo.set(this.u32(), this.top()); break; // LONG_BINPUT
        case 0x94: this.memo.set(this.memo.size, this.top()); break; // MEMOIZE
        case 0x68: case 0x6a: { // BINGET, LONG_BINGET
          const i = op === 0x68 ? this.u8() : this.u32();
          if (!this.memo.has(i)) this.fail(`memo entry ${i} is not defined`);
          this.push(this.memo.get(i));
          break;
        }
        case 0x28: this.metastack.push(this.stack); this.stack = []; break; // MARK
        case 0x30: this.pop(); break; // POP
        case 0x31: this.popMark(); break; // POP_MARK
        case 0x32: this.push(this.top()); break; // DUP
        case 0x29: this.push(new PyTuple([])); break; // EMPTY_TUPLE
        case 0x74: this.push(new PyTuple(this.popMark())); break; // TUPLE
        case 0x85: case 0x86: case 0x87: { // TUPLE1/2/3
          const k = op - 0x84;
          if (this.stack.length < k) this.fail('stack underflow');
          this.push(new PyTuple(this.stack.splice(this.stack.length - k, k)));
          break;
        }
        case 0x7d: this.push(new PyDict(false)); break; // EMPTY_DICT
        case 0x73: { // SETITEM
          const value = this.pop();
          const key = this.pop();
          const d = this.top();
          if (!(d instanceof PyDict)) this.fail(`SETITEM on ${describe(d)}`);
          this.dictSet(d, key, value);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          const d = this.top();
          if (!(d instanceof PyDict)) this.fail(`SETITEMS on ${describe(d)}`);
          if (items.length % 2 !== 0) this.fail('SETITEMS with an odd number of items');
          for (let i = 0; i < items.length; i += 2) this.dictSet(d, items[i], items[i + 1]);
          break;
        }
        case 0x5d: this.push(new PyList([])); break; // EMPTY_LIST
        case 0x61: { // APPEND
          const v = this.pop();
          const l = this.top();
          if (!(l instanceof PyList)) this.fail(`APPEND on ${describe(l)}`);
          l.items.push(v);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          const l = this.top();
          if (!(l instanceof PyList)) this.fail(`APPENDS on ${describe(l)}`);
          for (const v of items) l.items.push(v); // no spread: millions of items would overflow the call stack
          break;
        }
        case 0x58: this.push(this.utf8(this.u32())); break; // BINUNICODE
        case 0x8c: this.push(this.utf8(this.u8())); break; // SHORT_BINUNICODE
        case 0x8d: this.push(this.utf8(this.u64())); break; // BINUNICODE8
        case 0x43: this.push(this.take(this.u8()).slice()); break; // SHORT_BINBYTES
        case 0x42: this.push(this.take(this.u32()).slice()); break; // BINBYTES
        case 0x8e: this.push(this.take(this.u64()).slice()); break; // BINBYTES8
        case 0x4a: this.push(this.i32()); break; // BININT
        case 0x4b: this.push(this.u8()); break; // BININT1
        case 0x4d: this.push(this.u16()); break; // BININT2
        case 0x8a: case 0x8b: { // LONG1, LONG4
          const n = op === 0x8a ? this.u8() : this.u32();
          if (n > MAX_LONG_BYTES) this.fail(`integer of ${n} bytes (more than ${MAX_LONG_BYTES})`, 'ERR_LIMIT');
          const b = this.take(n);
          let v = 0n;
          for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
          if (n > 0 && (b[n - 1]! & 0x80) !== 0) v -= 1n << BigInt(8 * n);
          this.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
          break;
        }
        case 0x47: { // BINFLOAT (big-endian)
          const b = this.take(8);
          this.push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, false));
          break;
        }
        case 0x4e: this.push(null); break; // NONE
        case 0x88: this.push(true); break; // NEWTRUE
        case 0x89: this.push(false); break; // NEWFALSE
        case 0x52: { // REDUCE
          const args = this.pop();
          const fn = this.pop();
          this.push(this.call(fn, args));
          break;
        }
        case 0x81: { // NEWOBJ: cls.__new__(cls, *args), TorchScript module classes only
          const args = this.pop();
          const cls = this.pop();
          if (!(cls instanceof PyGlobal) || !cls.isClass) this.fail(`NEWOBJ on ${describe(cls)}`);
          if (!(args instanceof PyTuple) || args.items.length !== 0) this.fail(`NEWOBJ of ${escapeControl(cls.toString())} with arguments`);
          this.push(new PyObject(cls));
          break;
        }
        case 0x62: { // BUILD
          const state = this.pop();
          const obj = this.top();
          if (obj instanceof PyObject) {
            if (!(state instanceof PyDict)) {
              this.fail(`object of class ${escapeControl(obj.cls.toString())} has a ${describe(state)} as its state, not a dict of attributes: `
                + `its class restores itself with its own __setstate__ code; ${MODEL_LOAD_HINT}`);
            }
            if (obj.state !== undefined) this.fail(`object of class ${escapeControl(obj.cls.toString())} is built twice`);
            obj.state = state;
            break;
          }
          // OrderedDict._metadata (nn.Module state dicts) and tensor/parameter state: ignored — but only
          // state Python's default __setstate__ takes (an attribute dict, or (dict | None, slots dict | None)):
          // anything else is not what torch.save writes.
          if (!(obj instanceof PyDict || obj instanceof TensorView)) this.fail(`BUILD on ${describe(obj)}`);
          const attrs = (v: unknown) => v === null || v instanceof PyDict;
          if (!(state instanceof PyDict || (state instanceof PyTuple && state.items.length === 2 && state.items.every(attrs))))
            this.fail(`BUILD on ${describe(obj)} with a ${describe(state)} as its state (torch.save writes a dict of attributes there)`);
          break;
        }
        case 0x51: this.push(this.persistentLoad(this.pop())); break; // BINPERSID
        case 0x2e: { // STOP
          const result = this.pop();
          if (this.metastack.length !== 0) this.fail('STOP with an unclosed MARK');
          return result;
        }
        default:
          this.fail(`unsupported pickle opcode ${OPNAMES[op] ?? 'unknown'} (byte 0x${op.toString(16).padStart(2, '0')})`);
      }
    }
    this.fail('pickle has no STOP opcode', 'ERR_TRUNCATED');
  }
}

// ---------------------------------------------------------------------------
// Writing

/** Minimal protocol-2 pickle encoder for what torch.save(OrderedDict of tensors) emits. */
class PickleWriter {
  private chunks: Buffer[] = [];
  private readonly memo = new Map<string, number>();

  raw(...bytes: number[]): void { this.chunks.push(Buffer.from(bytes)); }
  bytes(b: Buffer): void { this.chunks.push(b); }

  put(id: string): void {
    const i = this.memo.size;
    this.memo.set(id, i);
    if (i < 256) this.raw(0x71, i); // BINPUT
    else { const b = Buffer.alloc(5); b[0] = 0x72; b.writeUInt32LE(i, 1); this.bytes(b); } // LONG_BINPUT
  }
  /** Pushes a memoized global (GLOBAL the first time, BINGET after). */
  global(module: string, name: string): void {
    const id = `global:${module}.${name}`;
    const i = this.memo.get(id);
    if (i !== undefined) { this.get(i); return; }
    this.bytes(Buffer.from(`c${module}\n${name}\n`, 'utf8'));
    this.put(id);
  }
  get(i: number): void {
    if (i < 256) this.raw(0x68, i);
    else { const b = Buffer.alloc(5); b[0] = 0x6a; b.writeUInt32LE(i, 1); this.bytes(b); }
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5);
    h[0] = 0x58; // BINUNICODE
    h.writeUInt32LE(b.length, 1);
    this.bytes(h);
    this.bytes(b);
  }
  int(v: number): void {
    if (v >= 0 && v < 256) this.raw(0x4b, v); // BININT1
    else if (v >= 0 && v < 65536) this.raw(0x4d, v & 0xff, v >>> 8); // BININT2
    else if (v >= -(2 ** 31) && v < 2 ** 31) { const b = Buffer.alloc(5); b[0] = 0x4a; b.writeInt32LE(v, 1); this.bytes(b); } // BININT
    else { // LONG1: minimal two's complement little-endian
      let x = BigInt(v);
      const out: number[] = [];
      for (;;) {
        out.push(Number(x & 0xffn));
        x >>= 8n;
        const sign = (out[out.length - 1]! & 0x80) !== 0;
        if ((x === 0n && !sign) || (x === -1n && sign)) break;
      }
      this.raw(0x8a, out.length, ...out);
    }
  }
  tuple(push: Array<() => void>): void {
    if (push.length === 0) { this.raw(0x29); return; }
    if (push.length > 3) this.raw(0x28); // MARK
    for (const p of push) p();
    this.raw(push.length > 3 ? 0x74 : 0x84 + push.length); // TUPLE or TUPLE1/2/3
  }
  orderedDict(): void {
    this.global('collections', 'OrderedDict');
    this.raw(0x29, 0x52); // EMPTY_TUPLE REDUCE
  }
  result(): Buffer { return Buffer.concat(this.chunks); }
}

function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) { stride[i] = s; s *= shape[i]!; }
  return stride;
}

/** data.pkl of `torch.save(OrderedDict(items))`, tensor i stored as record `data/<i>`. */
export function encodeStateDictPickle(items: ReadonlyArray<readonly [string, { dtype: DType; shape: readonly number[] }]>): Buffer {
  const w = new PickleWriter();
  w.raw(0x80, 2); // PROTO 2
  w.orderedDict();
  w.put('root');
  const BATCH = 1000; // as Python's pickle
  for (let start = 0; start < items.length; start += BATCH) {
    const batch = items.slice(start, start + BATCH);
    if (batch.length > 1) w.raw(0x28); // MARK
    batch.forEach(([name, t], j) => {
      const i = start + j;
      w.str(name);
      w.global('torch._utils', '_rebuild_tensor_v2');
      w.raw(0x28); // MARK (args)
      // persistent id ('storage', torch.XStorage, '<i>', 'cpu', numel)
      w.tuple([
        () => w.str('storage'),
        () => w.global('torch', DTYPE_STORAGES[t.dtype]),
        () => w.str(String(i)),
        () => w.str('cpu'),
        () => w.int(numel(t.shape)),
      ]);
      w.raw(0x51); // BINPERSID
      w.int(0); // storage_offset
      w.tuple(t.shape.map((d) => () => w.int(d)));
      w.tuple(contiguousStride(t.shape).map((d) => () => w.int(d)));
      w.raw(0x89); // requires_grad = False
      w.orderedDict(); // backward_hooks
      w.raw(0x74, 0x52); // TUPLE REDUCE
    });
    w.raw(batch.length > 1 ? 0x75 : 0x73); // SETITEMS or SETITEM
  }
  w.raw(0x2e); // STOP
  return w.result();
}
