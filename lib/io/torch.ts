// PyTorch zip archives: `torch.save` files (<name>/data.pkl holds a dict of tensors) and TorchScript
// archives such as OpenAI's released CLIP .pt files (<name>/data.pkl holds the module tree as
// `__torch__.*` objects). Tensor storages live in <name>/data/<key>. The pickle runs through the
// restricted unpickler with the allowlist below, so loading a file never executes its code.
import { PickleClass, PickleFunction, PickleObject, refuseGlobal, unpickle } from './pickle.js';
import { DTYPE_BYTES, numelOf, shapeStr, type RawDType, type RawTensor } from './raw.js';
import { ZipReader } from './zip.js';

export interface TorchArchive {
  /** 'torchscript' when data.pkl holds a module tree, 'state_dict' for a torch.save dict. */
  kind: 'torchscript' | 'state_dict';
  /** Dotted names, as state_dict() would give them. */
  tensors: Map<string, RawTensor>;
  /** Non-tensor scalars found beside the weights (epoch, ...), as strings. */
  extras: Record<string, string>;
}

const STORAGE_DTYPES: Record<string, RawDType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  IntStorage: 'I32',
  LongStorage: 'I64',
  ByteStorage: 'U8',
  BoolStorage: 'U8',
};

class StorageRef {
  data: Uint8Array | undefined;
  constructor(
    readonly key: string,
    readonly dtype: RawDType,
    readonly numel: number,
  ) {}
}

class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly size: number[],
    readonly stride: number[],
  ) {}
}

function intTuple(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || v.some((x) => !Number.isSafeInteger(x) || x < 0)) {
    throw new Error(`${what}: expected a tuple of non-negative integers, found ${String(v)}`);
  }
  return v as number[];
}

// The whole allowlist. Each entry is a JavaScript stand-in: nothing from the file is ever run.
function makeResolver(where: string) {
  const rebuildTensor = new PickleFunction('torch._utils._rebuild_tensor_v2', (args) => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) throw new Error(`${where}: _rebuild_tensor_v2 expects a storage, found ${String(storage)}`);
    if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw new Error(`${where}: bad storage offset ${String(offset)}`);
    const sz = intTuple(size, `${where}: tensor size`);
    const st = intTuple(stride, `${where}: tensor stride`);
    if (sz.length !== st.length) throw new Error(`${where}: tensor size ${shapeStr(sz)} and stride ${shapeStr(st)} differ in rank`);
    return new TensorRef(storage, offset as number, sz, st);
  });
  // A Parameter wraps a tensor; requires_grad and hooks do not matter for loading.
  const rebuildParameter = new PickleFunction('torch._utils._rebuild_parameter', (args) => args[0]);
  const orderedDict = new PickleFunction('collections.OrderedDict', (args) => {
    if (args.length !== 0) throw new Error(`${where}: OrderedDict with arguments is not supported`);
    return new Map();
  });
  // TorchScript wraps typed lists in these; they return their argument unchanged.
  const identity = (name: string) => new PickleFunction(`torch.jit._pickle.${name}`, (args) => args[0]);
  const device = new PickleFunction('torch.device', (args) => String(args[0]));
  const torchScriptClasses = new Map<string, PickleClass>();

  return (module: string, name: string): PickleFunction | PickleClass => {
    const q = `${module}.${name}`;
    if (q === 'torch._utils._rebuild_tensor_v2') return rebuildTensor;
    if (q === 'torch._utils._rebuild_parameter') return rebuildParameter;
    if (q === 'collections.OrderedDict') return orderedDict;
    if (q === 'torch.device') return device;
    if (module === 'torch' && name in STORAGE_DTYPES) return new PickleClass(q);
    if (module === 'torch.jit._pickle' && /^(build_(intlist|floatlist|doublelist|boollist|tensorlist)|restore_type_tag)$/.test(name)) {
      return identity(name);
    }
    // TorchScript module classes: inert placeholders that only hold the state BUILD gives them.
    if (module === '__torch__' || module.startsWith('__torch__.')) {
      let c = torchScriptClasses.get(q);
      if (!c) torchScriptClasses.set(q, (c = new PickleClass(q)));
      return c;
    }
    return refuseGlobal(module, name);
  };
}

function persistentLoader(where: string, storages: Map<string, StorageRef>) {
  return (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
      throw new Error(`${where}: persistent id must be ('storage', type, key, location, numel), found ${String(pid)}`);
    }
    const [, type, key, , numel] = pid;
    if (!(type instanceof PickleClass) || !type.qualname.startsWith('torch.')) {
      throw new Error(`${where}: storage type must be a torch storage class, found ${String(type)}`);
    }
    const dtype = STORAGE_DTYPES[type.qualname.slice('torch.'.length)];
    if (!dtype) throw new Error(`${where}: unsupported storage type ${type.qualname}`);
    if (typeof key !== 'string' || !/^[\w./-]+$/.test(key) || key.includes('..')) {
      throw new Error(`${where}: bad storage key ${JSON.stringify(key)}`);
    }
    if (!Number.isSafeInteger(numel) || (numel as number) < 0) throw new Error(`${where}: storage ${key}: bad element count ${String(numel)}`);
    let s = storages.get(key);
    if (!s) storages.set(key, (s = new StorageRef(key, dtype, numel as number)));
    else if (s.dtype !== dtype) throw new Error(`${where}: storage ${key} is used as both ${s.dtype} and ${dtype}`);
    return s;
  };
}

/** The single `<prefix>/data.pkl` of the archive (prefix may be empty). */
function findPrefix(zip: ZipReader): string {
  const found = zip.names().filter((n) => n === 'data.pkl' || /^[^/]+\/data\.pkl$/.test(n));
  if (found.length !== 1) {
    throw new Error(`torch archive ${zip.file}: expected one <name>/data.pkl entry, found ${found.length ? found.join(', ') : 'none'}`);
  }
  return found[0].slice(0, -'data.pkl'.length);
}

/** Parameter and buffer names per TorchScript class, from the archive's code/ files. */
async function scriptedStateNames(zip: ZipReader, prefix: string): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  const codeDir = `${prefix}code/`;
  for (const name of zip.names()) {
    if (!name.startsWith(codeDir) || !name.endsWith('.py')) continue;
    const qualifier = name.slice(codeDir.length, -3).split('/').join('.');
    const text = Buffer.from(await zip.read(name)).toString('utf8');
    let cls: Set<string> | undefined;
    for (const line of text.split('\n')) {
      const c = /^class (\w+)\(/.exec(line);
      if (c) {
        cls = new Set();
        out.set(`${qualifier}.${c[1]}`, cls);
        continue;
      }
      const m = /^\s+__(parameters|buffers)__ = \[(.*)\]/.exec(line);
      if (m && cls) for (const q of m[2].matchAll(/"([^"]+)"/g)) cls.add(q[1]);
    }
  }
  return out;
}

function materialize(t: TensorRef, where: string, name: string): RawTensor {
  const s = t.storage;
  const es = DTYPE_BYTES[s.dtype];
  const n = numelOf(t.size);
  let last = t.offset;
  for (let i = 0; i < t.size.length; i++) if (t.size[i] > 0) last += (t.size[i] - 1) * t.stride[i];
  if (n > 0 && last >= s.numel) {
    throw new Error(`${where}: tensor "${name}" ${shapeStr(t.size)} at offset ${t.offset} reaches element ${last}, but storage ${s.key} holds ${s.numel}`);
  }
  const data = s.data!;
  let contiguous = true;
  for (let i = t.size.length - 1, want = 1; i >= 0; i--) {
    if (t.size[i] !== 1 && t.stride[i] !== want) contiguous = false;
    want *= t.size[i];
  }
  if (contiguous) return { dtype: s.dtype, shape: [...t.size], data: data.subarray(t.offset * es, (t.offset + n) * es) };
  // A strided view (a transpose saved as is): gather it into row-major order.
  const out = new Uint8Array(n * es);
  const idx = new Array<number>(t.size.length).fill(0);
  for (let k = 0; k < n; k++) {
    let e = t.offset;
    for (let i = 0; i < idx.length; i++) e += idx[i] * t.stride[i];
    out.set(data.subarray(e * es, (e + 1) * es), k * es);
    for (let i = idx.length - 1; i >= 0; i--) {
      if (++idx[i] < t.size[i]) break;
      idx[i] = 0;
    }
  }
  return { dtype: s.dtype, shape: [...t.size], data: out };
}

/** Reads a PyTorch zip archive from a path or from bytes. */
export async function readTorchArchive(input: string | Uint8Array, label?: string): Promise<TorchArchive> {
  const zip = typeof input === 'string' ? await ZipReader.open(input) : await ZipReader.fromBuffer(input, label);
  try {
    return await readFromZip(zip);
  } finally {
    await zip.close();
  }
}

async function readFromZip(zip: ZipReader): Promise<TorchArchive> {
  const prefix = findPrefix(zip);
  const where = `torch archive ${zip.file}`;
  if (zip.has(`${prefix}byteorder`)) {
    const order = Buffer.from(await zip.read(`${prefix}byteorder`)).toString('latin1').trim();
    if (order !== 'little') throw new Error(`${where}: byteorder is "${order}", only "little" is supported`);
  }
  const storages = new Map<string, StorageRef>();
  const root = unpickle(await zip.read(`${prefix}data.pkl`), {
    source: `${where}: ${prefix}data.pkl`,
    resolveGlobal: makeResolver(where),
    persistentLoad: persistentLoader(where, storages),
  });

  const refs = new Map<string, TensorRef>();
  const extras: Record<string, string> = {};
  let kind: TorchArchive['kind'];
  if (root instanceof PickleObject) {
    kind = 'torchscript';
    walkModule(root, '', await scriptedStateNames(zip, prefix), refs, where, []);
  } else if (root instanceof Map) {
    kind = 'state_dict';
    // Training checkpoints wrap the weights: {'epoch': .., 'state_dict': {..}, 'optimizer': ..}.
    const inner = root.get('state_dict');
    const dict = inner instanceof Map ? inner : root;
    for (const [k, v] of dict) {
      if (typeof k !== 'string') continue;
      if (v instanceof TensorRef) refs.set(k, v);
      else if (isScalar(v)) extras[k] = String(v);
    }
    if (dict !== root) for (const [k, v] of root) if (typeof k === 'string' && isScalar(v)) extras[k] = String(v);
  } else throw new Error(`${where}: data.pkl holds a ${typeof root}, expected a dict of tensors or a module`);
  if (refs.size === 0) throw new Error(`${where}: data.pkl holds no tensors`);

  // Only storages behind the collected tensors are read: optimizer state stays on disk.
  for (const s of new Set([...refs.values()].map((t) => t.storage))) {
    const entry = [`${prefix}data/${s.key}`, `${prefix}${s.key}`].find((n) => zip.has(n));
    if (!entry) throw new Error(`${where}: storage "${s.key}" has no entry ${prefix}data/${s.key}`);
    const data = await zip.read(entry);
    const want = s.numel * DTYPE_BYTES[s.dtype];
    if (data.byteLength < want) {
      throw new Error(`${where}: storage ${entry} holds ${data.byteLength} bytes, expected ${want} (${s.numel} x ${s.dtype})`);
    }
    s.data = data;
  }

  // Weights saved from a DataParallel wrapper carry a "module." prefix on every name.
  const strip = kind === 'state_dict' && [...refs.keys()].every((k) => k.startsWith('module.'));
  const tensors = new Map<string, RawTensor>();
  for (const [k, t] of refs) tensors.set(strip ? k.slice('module.'.length) : k, materialize(t, where, k));
  return { kind, tensors, extras };
}

function isScalar(v: unknown): v is number | string | boolean {
  return typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean';
}

// Collects parameters and buffers like state_dict(): when the class's code lists them, only those
// attributes count (plain tensor attributes such as a cached attention mask do not). A submodule
// shared by two parents appears under both names, as state_dict() does.
function walkModule(
  obj: PickleObject,
  prefix: string,
  names: Map<string, Set<string>>,
  out: Map<string, TensorRef>,
  where: string,
  parents: PickleObject[],
): void {
  if (parents.includes(obj)) throw new Error(`${where}: module "${prefix.slice(0, -1)}" contains itself`);
  const state = obj.state;
  if (!(state instanceof Map)) return;
  const allowed = names.get(obj.className);
  for (const [k, v] of state) {
    if (typeof k !== 'string') continue;
    const key = prefix + k;
    if (v instanceof TensorRef) {
      if (!allowed || allowed.has(k)) out.set(key, v);
    } else if (v instanceof PickleObject) walkModule(v, `${key}.`, names, out, where, [...parents, obj]);
  }
}
