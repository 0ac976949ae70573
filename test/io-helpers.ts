// Test-only builders: a pickle emitter producing the opcode sequences PyTorch writes, and helpers
// that assemble torch.save / TorchScript zip archives from them.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { writeZip, type ZipInput } from '../lib/io/zip.js';
import type { RawDType, RawTensor } from '../lib/io/raw.js';

export const FIXTURES = fileURLToPath(new URL('../../shared/fixtures', import.meta.url));
export const HAVE_FIXTURES = existsSync(FIXTURES);

export const HAVE_PYTHON = spawnSync('python3', ['-c', 'import pickle, zipfile'], { stdio: 'ignore' }).status === 0;

/** Runs a Python script and returns its exit status, raw stdout and stderr text. */
export function python(script: string, args: string[] = []): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync('python3', ['-c', script, ...args]);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
}

export class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}
export class Reduce {
  constructor(
    readonly fn: PV,
    readonly args: PV[],
  ) {}
}
export class NewObj {
  constructor(
    readonly cls: PV,
    readonly args: PV[],
    readonly state?: PV,
  ) {}
}
/** A dict built by REDUCE (an OrderedDict), then filled by SETITEMS and given state by BUILD. */
export class DictReduce {
  constructor(
    readonly fn: PV,
    readonly items: Map<PV, PV>,
    readonly state?: PV,
  ) {}
}
export class PersId {
  constructor(readonly id: PV[]) {}
}
export class Float {
  constructor(readonly v: number) {}
}
/** Raw opcode bytes spliced into the stream (for malformed or hostile programs). */
export class RawOps {
  constructor(readonly bytes: number[]) {}
}

export type PV =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PV[]
  | Map<PV, PV>
  | Global
  | Reduce
  | NewObj
  | DictReduce
  | PersId
  | Float
  | RawOps;

export interface DumpOptions {
  protocol?: number;
  /** Emit globals as STACK_GLOBAL (protocol 4 style) instead of GLOBAL. */
  stackGlobal?: boolean | undefined;
}

/** Serializes a value tree into pickle opcodes; shared objects are memoized (BINPUT / BINGET). */
export function dumps(value: PV, opts: DumpOptions = {}): Uint8Array {
  const out: number[] = [0x80, opts.protocol ?? 2];
  const memo = new Map<object, number>();
  const u32 = (n: number) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    out.push(0x58);
    u32(b.length);
    out.push(...b);
  };
  const int = (n: number | bigint) => {
    if (typeof n === 'number' && n >= 0 && n < 256) out.push(0x4b, n);
    else if (typeof n === 'number' && n >= 0 && n < 65536) out.push(0x4d, n & 0xff, n >> 8);
    else if (typeof n === 'number' && n >= -(2 ** 31) && n < 2 ** 31) {
      out.push(0x4a);
      u32(n >>> 0);
    } else {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(n));
      out.push(0x8a, 8, ...b);
    }
  };
  const emit = (v: PV): void => {
    if (v !== null && typeof v === 'object' && !(v instanceof Float) && !(v instanceof RawOps)) {
      const m = memo.get(v);
      if (m !== undefined) {
        out.push(0x6a);
        u32(m);
        return;
      }
    }
    if (v === null) out.push(0x4e);
    else if (v === true) out.push(0x88);
    else if (v === false) out.push(0x89);
    else if (typeof v === 'number' || typeof v === 'bigint') int(v);
    else if (typeof v === 'string') str(v);
    else if (v instanceof Float) {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(v.v);
      out.push(0x47, ...b);
    } else if (v instanceof RawOps) out.push(...v.bytes);
    else if (v instanceof Uint8Array) {
      out.push(0x42);
      u32(v.length);
      out.push(...v);
    } else if (Array.isArray(v)) {
      if (v.length === 0) out.push(0x29);
      else {
        out.push(0x28);
        v.forEach(emit);
        out.push(0x74);
      }
    } else if (v instanceof Map) {
      out.push(0x7d);
      if (v.size) {
        out.push(0x28);
        for (const [k, x] of v) {
          emit(k);
          emit(x);
        }
        out.push(0x75);
      }
    } else if (v instanceof Global) {
      if (opts.stackGlobal) {
        str(v.module);
        str(v.name);
        out.push(0x93);
      } else out.push(0x63, ...Buffer.from(`${v.module}\n${v.name}\n`, 'utf8'));
    } else if (v instanceof Reduce) {
      emit(v.fn);
      emit(v.args);
      out.push(0x52);
    } else if (v instanceof NewObj) {
      emit(v.cls);
      emit(v.args);
      out.push(0x81);
      if (v.state !== undefined) {
        emit(v.state);
        out.push(0x62);
      }
    } else if (v instanceof DictReduce) {
      emit(v.fn);
      out.push(0x29, 0x52);
      if (v.items.size) {
        out.push(0x28);
        for (const [k, x] of v.items) {
          emit(k);
          emit(x);
        }
        out.push(0x75);
      }
      if (v.state !== undefined) {
        emit(v.state);
        out.push(0x62);
      }
    } else if (v instanceof PersId) {
      emit(v.id);
      out.push(0x51);
    }
    if (v !== null && typeof v === 'object' && !(v instanceof Float) && !(v instanceof RawOps)) {
      const id = memo.size;
      memo.set(v, id);
      out.push(0x72);
      u32(id);
    }
  };
  emit(value);
  out.push(0x2e);
  return Uint8Array.from(out);
}

const STORAGE_NAME: Record<RawDType, string> = {
  F32: 'FloatStorage',
  F16: 'HalfStorage',
  BF16: 'BFloat16Storage',
  F64: 'DoubleStorage',
  I32: 'IntStorage',
  I64: 'LongStorage',
  U8: 'ByteStorage',
};

/** Collects storages and emits tensors the way torch.save does. */
export class StorageTable {
  readonly files: Record<string, Uint8Array> = {};
  private next = 0;

  /** A persistent id for a new storage holding `data` (element count from the dtype). */
  storage(dtype: RawDType, data: Uint8Array, elementBytes: number): PersId {
    const key = String(this.next++);
    this.files[key] = data;
    return new PersId(['storage', new Global('torch', STORAGE_NAME[dtype]), key, 'cpu', data.byteLength / elementBytes]);
  }

  /** torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks). */
  static tensor(storage: PersId, offset: number, size: number[], stride: number[]): Reduce {
    return new Reduce(new Global('torch._utils', '_rebuild_tensor_v2'), [
      storage,
      offset,
      size,
      stride,
      false,
      new Reduce(new Global('collections', 'OrderedDict'), []),
    ]);
  }

  /** A contiguous tensor with its own storage. */
  contiguous(t: RawTensor, elementBytes: number): Reduce {
    const stride: number[] = [];
    let s = 1;
    for (let i = t.shape.length - 1; i >= 0; i--) {
      stride[i] = s;
      s *= t.shape[i];
    }
    return StorageTable.tensor(this.storage(t.dtype, t.data, elementBytes), 0, t.shape, stride);
  }
}

/** A torch.save state dict: an OrderedDict with a _metadata attribute, as PyTorch pickles it. */
export function stateDict(items: Map<PV, PV>): DictReduce {
  const meta = new DictReduce(new Global('collections', 'OrderedDict'), new Map<PV, PV>([['', new Map<PV, PV>([['version', 1]])]]));
  return new DictReduce(new Global('collections', 'OrderedDict'), items, new Map<PV, PV>([['_metadata', meta]]));
}

/** A PyTorch zip: <prefix>/data.pkl, <prefix>/data/<key>, byteorder and version entries. */
export function torchZip(
  prefix: string,
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  extra: ZipInput[] = [],
  method: 'store' | 'deflate' = 'store',
): Uint8Array {
  const entries: ZipInput[] = [
    { name: `${prefix}/data.pkl`, data: pickle, method },
    { name: `${prefix}/byteorder`, data: Buffer.from('little') },
    ...Object.entries(storages).map(([k, data]) => ({ name: `${prefix}/data/${k}`, data, method })),
    { name: `${prefix}/version`, data: Buffer.from('3\n') },
    ...extra,
  ];
  return writeZip(entries);
}
