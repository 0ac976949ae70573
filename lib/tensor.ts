// Tensors: a view (shape, strides, offset, dtype) over a reference-counted native storage on one
// device. Memory is freed by dispose() or by the scope that made the tensor (tidy); garbage
// collection of the native storage is only a safety net.
import { addon, type NativeStorage, type NativeTensorDesc } from './native/addon.js';
import type { Node } from './autograd.js';

export type DType = 'float32' | 'bfloat16' | 'int32' | 'uint8';
export type Device = 'cpu' | 'cuda';
export type TypedArray = Float32Array | Int32Array | Uint8Array | Uint16Array;

export const DTYPE_CODE: Record<DType, number> = { float32: 0, bfloat16: 1, int32: 2, uint8: 3 };
export const DTYPE_SIZE: Record<DType, number> = { float32: 4, bfloat16: 2, int32: 4, uint8: 1 };
const DEVICE_CODE: Record<Device, number> = { cpu: 0, cuda: 1 };

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/**
 * A native buffer shared by every view of it; freed when the last view lets go. Every write
 * (an op's output, a host write) bumps `version` and drops the tensors derived from the old
 * contents (a weight's packed copy), which also die with the buffer.
 */
class StorageRef {
  refs = 1;
  version = 0;
  private derived_: Map<string, Tensor> | undefined;
  constructor(readonly native: NativeStorage, readonly device: Device, readonly nbytes: number) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) {
      this.dropDerived();
      this.native.dispose();
    }
  }
  /** Host bytes written at a byte offset. */
  write(byteOffset: number, data: ArrayBufferView): void {
    this.native.write(byteOffset, data);
    this.written();
  }
  written(): void {
    this.version++;
    if (this.derived_) this.dropDerived();
  }
  /** A tensor computed from this buffer's current contents, made once per version (e.g. a packed weight). */
  derived(key: string, make: () => Tensor): Tensor {
    let t = this.derived_?.get(key);
    if (!t) {
      t = untracked(make);
      (this.derived_ ??= new Map()).set(key, t);
    }
    return t;
  }
  private dropDerived(): void {
    const d = this.derived_;
    this.derived_ = undefined;
    if (d) for (const t of d.values()) t.dispose();
  }
}

function checkDevice(device: string): Device {
  if (device === 'cpu') return device;
  if (device === 'cuda') {
    const info = addon().info();
    if (!info.cudaCompiled || info.cudaDevices.length === 0) {
      throw new Error(`device 'cuda' is not available (${info.cudaUnavailableReason || 'no CUDA device'}); available devices: cpu`);
    }
    return device;
  }
  throw new Error(`unknown device '${device}'; available devices: ${availableDevices().join(', ')}`);
}

export function availableDevices(): Device[] {
  const info = addon().info();
  return info.cudaCompiled && info.cudaDevices.length > 0 ? ['cpu', 'cuda'] : ['cpu'];
}

let backwardImpl: ((root: Tensor, grad?: Tensor) => void) | undefined;
/** @internal Set by autograd.ts (kept apart to avoid an import cycle). */
export function setBackwardImpl(fn: (root: Tensor, grad?: Tensor) => void): void {
  backwardImpl = fn;
}

// --- scopes --------------------------------------------------------------------------------
const scopes: Set<Tensor>[] = [];
let trackingPaused = 0;

function track(t: Tensor): void {
  if (scopes.length && !trackingPaused) scopes[scopes.length - 1].add(t);
}

function collect(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value == null || typeof value !== 'object') return;
  if (value instanceof Tensor) out.add(value);
  else if (Array.isArray(value)) for (const v of value) collect(v, out, depth + 1);
  else if (value instanceof Map) for (const v of value.values()) collect(v, out, depth + 1);
  else if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collect(v, out, depth + 1);
}

/**
 * Runs fn and disposes every tensor created inside it, except those it returns (directly, in an
 * array, a Map or a plain object) and those passed to keep(). Synchronous functions only.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error('tidy: the function must be synchronous (it returned a Promise)');
  const keepers = new Set<Tensor>();
  collect(result, keepers);
  for (const t of scope) {
    if (keepers.has(t)) {
      track(t); // hand it to the enclosing scope
    } else if (!t.disposed) {
      t.dispose();
    }
  }
  return result;
}

/** Removes a tensor from the current scopes, so tidy leaves it alive. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** Runs fn without recording tensors in any scope (the caller owns what it creates). */
export function untracked<T>(fn: () => T): T {
  trackingPaused++;
  try {
    return fn();
  } finally {
    trackingPaused--;
  }
}

export interface TensorOptions {
  device?: Device;
  dtype?: DType;
  requiresGrad?: boolean;
}

function dtypeOf(data: TypedArray | number[], dtype?: DType): DType {
  if (dtype) return dtype;
  if (data instanceof Float32Array || Array.isArray(data)) return 'float32';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Uint16Array) return 'bfloat16';
  throw new Error('Tensor.from: unsupported array type');
}

export function f32ToBf16(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    else out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return out;
}

function toBytes(data: TypedArray | number[], dtype: DType): ArrayBufferView {
  if (Array.isArray(data)) {
    if (dtype === 'int32') return Int32Array.from(data);
    if (dtype === 'uint8') return Uint8Array.from(data);
    const f = Float32Array.from(data);
    return dtype === 'bfloat16' ? f32ToBf16(f) : f;
  }
  if (dtype === 'bfloat16' && data instanceof Float32Array) return f32ToBf16(data);
  const want = { float32: Float32Array, int32: Int32Array, uint8: Uint8Array, bfloat16: Uint16Array }[dtype];
  if (!(data instanceof want)) throw new Error(`Tensor.from: a ${data.constructor.name} cannot hold ${dtype} data`);
  return data;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it is part of a recorded graph. */
  gradFn: Node | null = null;
  private storage_: StorageRef | null;

  /** @internal Use Tensor.from / empty / zeros. */
  constructor(storage: StorageRef, shape: readonly number[], strides: readonly number[], offset: number, dtype: DType) {
    this.storage_ = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.offset = offset;
    this.dtype = dtype;
    track(this);
  }

  // --- construction ---
  static empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
    const dtype = opts.dtype ?? 'float32';
    const device = checkDevice(opts.device ?? 'cpu');
    for (const s of shape) {
      if (!Number.isInteger(s) || s < 0) throw new Error(`invalid shape ${shapeString(shape)}: sizes must be non-negative integers`);
    }
    if (shape.length > 8) throw new Error(`invalid shape ${shapeString(shape)}: at most 8 dimensions`);
    const nbytes = numel(shape) * DTYPE_SIZE[dtype];
    const a = addon();
    const storage = new StorageRef(new a.Storage(nbytes, DEVICE_CODE[device]), device, nbytes);
    const t = new Tensor(storage, shape, contiguousStrides(shape), 0, dtype);
    if (opts.requiresGrad) t.requiresGrad = true;
    return t;
  }

  static from(data: TypedArray | number[], shape?: readonly number[], opts: TensorOptions = {}): Tensor {
    const dtype = dtypeOf(data, opts.dtype);
    const sh = shape ?? [data.length];
    if (numel(sh) !== data.length) {
      throw new Error(`Tensor.from: ${data.length} values do not fill shape ${shapeString(sh)} (${numel(sh)} elements)`);
    }
    const t = Tensor.empty(sh, { ...opts, dtype });
    if (data.length) t.storage.write(0, toBytes(data, dtype));
    return t;
  }

  static scalar(value: number, opts: TensorOptions = {}): Tensor {
    return Tensor.from([value], [], opts);
  }

  static full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
    const t = Tensor.empty(shape, opts);
    runRaw('fill', [], [t], [], [value]);
    return t;
  }

  static zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 0, opts);
  }

  static ones(shape: readonly number[], opts: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 1, opts);
  }

  // --- properties ---
  get device(): Device {
    return this.storage.device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }
  get disposed(): boolean {
    return this.storage_ === null;
  }
  get isContiguous(): boolean {
    let s = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== s) return false;
      s *= this.shape[i];
    }
    return true;
  }
  /** @internal */
  get storage(): StorageRef {
    if (!this.storage_) throw new Error(`tensor ${this.describe()} used after dispose()`);
    return this.storage_;
  }
  /** @internal The descriptor the native op call takes. */
  desc(op: string): NativeTensorDesc {
    if (!this.storage_) throw new Error(`${op}: tensor ${this.describe()} used after dispose()`);
    return [this.storage_.native, DTYPE_CODE[this.dtype], this.offset, this.shape as number[], this.strides as number[]];
  }

  describe(): string {
    return `${this.dtype}${shapeString(this.shape)}`;
  }
  toString(): string {
    return `Tensor(${this.describe()}, ${this.storage_ ? this.device : 'disposed'})`;
  }

  // --- memory ---
  dispose(): void {
    if (!this.storage_) return;
    this.storage_.release();
    this.storage_ = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal A new view over the same storage (retains it). */
  view(shape: readonly number[], strides: readonly number[], offset = this.offset): Tensor {
    return new Tensor(this.storage.retain(), shape, strides, offset, this.dtype);
  }

  /** Copies the data out: a typed array on the CPU, a Promise of one for a CUDA tensor. bfloat16 reads as Float32Array. */
  toArray(): TypedArray | Promise<TypedArray> {
    const out = this.toArraySync();
    return this.device === 'cpu' ? out : Promise.resolve(out);
  }

  /** Copies the data out synchronously, whatever the device (a CUDA tensor waits for its stream). */
  toArraySync(): TypedArray {
    const src = this.isContiguous ? this : untracked(() => copyContiguous(this));
    try {
      const bytes = src.storage.native.read(src.offset * DTYPE_SIZE[src.dtype], src.size * DTYPE_SIZE[src.dtype]);
      switch (src.dtype) {
        case 'float32': return new Float32Array(bytes);
        case 'int32': return new Int32Array(bytes);
        case 'uint8': return new Uint8Array(bytes);
        case 'bfloat16': return bf16ToF32(new Uint16Array(bytes));
      }
      throw new Error(`unknown dtype ${src.dtype}`);
    } finally {
      if (src !== this) src.dispose();
    }
  }

  /** The data as nested arrays (for printing and tests). */
  toList(): unknown {
    const flat = Array.from(this.toArraySync() as ArrayLike<number>);
    const build = (dim: number, off: number): unknown => {
      if (dim === this.ndim) return flat[off];
      const stride = numel(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * stride));
    };
    return build(0, 0);
  }

  /** Back-propagates from this tensor (a scalar unless grad is given); see autograd.backward. */
  backward(grad?: Tensor): void {
    if (!backwardImpl) throw new Error('backward(): autograd is not loaded');
    backwardImpl(this, grad);
  }

  item(): number {
    if (this.size !== 1) throw new Error(`item(): tensor ${this.describe()} has ${this.size} elements, not 1`);
    return (this.toArraySync() as ArrayLike<number>)[0];
  }

  /** A copy on another device (or this tensor itself when already there). */
  to(device: Device): Tensor {
    const dev = checkDevice(device);
    if (dev === this.device) return this;
    const src = this.isContiguous ? this : copyContiguous(this);
    const out = Tensor.empty(this.shape, { dtype: this.dtype, device: dev });
    const es = DTYPE_SIZE[this.dtype];
    addon().copy(out.storage.native, 0, src.storage.native, src.offset * es, src.size * es);
    out.storage.written();
    if (src !== this) src.dispose();
    return out;
  }
}

/** Runs a native op on tensors, with no autograd. */
export function runRaw(
  op: import('./native/ops.gen.js').OpName,
  inputs: (Tensor | null)[],
  outputs: (Tensor | null)[],
  ints: number[] = [],
  floats: number[] = [],
): void {
  const a = addon();
  let device: Device | undefined;
  for (const t of [...inputs, ...outputs]) {
    if (!t) continue;
    const d = t.desc(op)[0] && t.device;
    if (device && d !== device) {
      throw new Error(`${op}: tensors on different devices (${[...inputs, ...outputs].filter(Boolean).map((x) => `${x!.describe()} on ${x!.device}`).join(', ')})`);
    }
    device = d;
  }
  const t0 = profile ? performance.now() : 0;
  a.run(
    opIdOf(op),
    inputs.map((t) => (t ? t.desc(op) : null)),
    outputs.map((t) => (t ? t.desc(op) : null)),
    ints,
    floats,
  );
  for (const t of outputs) t?.storage.written();
  if (profile) {
    const e = profile.get(op) ?? { calls: 0, ms: 0 };
    e.calls++;
    e.ms += performance.now() - t0;
    profile.set(op, e);
  }
}

// TSCLIP_PROFILE=1 prints, at exit, the time spent in each native op (synchronous CPU ops only).
const profile: Map<string, { calls: number; ms: number }> | null = process.env.TSCLIP_PROFILE ? new Map() : null;
if (profile) {
  process.on('exit', () => {
    const rows = [...profile.entries()].sort((x, y) => y[1].ms - x[1].ms);
    const total = rows.reduce((s, [, e]) => s + e.ms, 0);
    process.stderr.write(`tsclip op profile (${total.toFixed(1)} ms in native ops)\n`);
    for (const [name, e] of rows) process.stderr.write(`  ${name.padEnd(20)} ${String(e.calls).padStart(7)} calls ${e.ms.toFixed(1).padStart(10)} ms\n`);
  });
}

import { opId as opIdOf } from './native/addon.js';

/** A contiguous copy of t (no autograd). */
export function copyContiguous(t: Tensor, dtype: DType = t.dtype): Tensor {
  const out = Tensor.empty(t.shape, { dtype, device: t.device });
  runRaw('copy', [t], [out]);
  return out;
}

/** t's elements contiguous, in a tensor the caller owns: a view of t when t is contiguous, else a copy. */
export function contiguousOwned(t: Tensor): Tensor {
  return t.isContiguous ? t.view(t.shape, t.strides) : copyContiguous(t);
}

/**
 * t's elements as a contiguous [rows, cols] tensor the caller owns (rows * cols = t.numel): a view
 * of t when t is contiguous and of `dtype` already, else a view of a converted copy.
 */
export function rowsView(t: Tensor, rows: number, cols: number, dtype: DType = t.dtype): Tensor {
  if (t.isContiguous && dtype === t.dtype) return t.view([rows, cols], [cols, 1]);
  const c = copyContiguous(t, dtype);
  const v = c.view([rows, cols], [cols, 1]);
  c.dispose();
  return v;
}
