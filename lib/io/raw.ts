// Raw checkpoint tensors: a dtype tag, a shape and little-endian bytes. Readers hand out views into
// the file's buffer; the tensor core copies them into native storage, so nothing here owns memory.

export type RawDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I32' | 'I64' | 'U8';

export interface RawTensor {
  dtype: RawDType;
  shape: number[];
  /** Little-endian element bytes, row-major and contiguous; usually a view into a larger buffer. */
  data: Uint8Array;
}

export const RAW_DTYPES: readonly RawDType[] = ['F32', 'F16', 'BF16', 'F64', 'I32', 'I64', 'U8'];

export const DTYPE_BYTES: Readonly<Record<RawDType, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I32: 4,
  I64: 8,
  U8: 1,
};

export function isRawDType(s: unknown): s is RawDType {
  return typeof s === 'string' && (RAW_DTYPES as readonly string[]).includes(s);
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Builds a RawTensor after checking that the byte length matches dtype and shape. */
export function rawTensor(dtype: RawDType, shape: readonly number[], data: Uint8Array, what = 'tensor'): RawTensor {
  if (!isRawDType(dtype)) throw new Error(`${what}: unknown dtype "${String(dtype)}", expected one of ${RAW_DTYPES.join(', ')}`);
  for (const s of shape) {
    if (!Number.isSafeInteger(s) || s < 0) throw new Error(`${what}: bad shape ${shapeStr(shape)}, expected non-negative integers`);
  }
  const want = numelOf(shape) * DTYPE_BYTES[dtype];
  if (data.byteLength !== want) {
    throw new Error(`${what}: ${dtype} ${shapeStr(shape)} needs ${want} bytes, found ${data.byteLength}`);
  }
  return { dtype, shape: [...shape], data };
}

export function fromFloat32(values: Float32Array, shape: readonly number[] = [values.length]): RawTensor {
  return rawTensor('F32', shape, bytesOf(values));
}

export function fromInt32(values: Int32Array, shape: readonly number[] = [values.length]): RawTensor {
  return rawTensor('I32', shape, bytesOf(values));
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  if (!LITTLE_ENDIAN) throw new Error('raw tensors need a little-endian host');
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// A typed-array view needs an aligned offset; otherwise the bytes are copied once.
function aligned(data: Uint8Array, size: number): Uint8Array {
  if (data.byteOffset % size === 0) return data;
  return new Uint8Array(data);
}

let halfTable: Float32Array | undefined;

// All 65536 half values, computed once: a lookup is the fastest conversion in JavaScript.
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    let v: number;
    if (exp === 0) v = man * 2 ** -24;
    else if (exp === 31) v = man === 0 ? Infinity : NaN;
    else v = (1 + man / 1024) * 2 ** (exp - 15);
    t[h] = sign * v;
  }
  halfTable = t;
  return t;
}

/**
 * Values as float32. F32 returns a view that shares the tensor's memory when aligned (treat it as
 * read-only); every other dtype is converted into a new array.
 */
export function toFloat32(raw: RawTensor): Float32Array {
  const n = numelOf(raw.shape);
  checkLength(raw, n);
  if (!LITTLE_ENDIAN) throw new Error('raw tensors need a little-endian host');
  const d = raw.data;
  switch (raw.dtype) {
    case 'F32': {
      const a = aligned(d, 4);
      return new Float32Array(a.buffer, a.byteOffset, n);
    }
    case 'F16': {
      const a = aligned(d, 2);
      const h = new Uint16Array(a.buffer, a.byteOffset, n);
      const t = halfToFloatTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = t[h[i]];
      return out;
    }
    case 'BF16': {
      const a = aligned(d, 2);
      const h = new Uint16Array(a.buffer, a.byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = h[i] << 16;
      return out;
    }
    case 'F64': {
      const a = aligned(d, 8);
      return Float32Array.from(new Float64Array(a.buffer, a.byteOffset, n));
    }
    case 'I32': {
      const a = aligned(d, 4);
      return Float32Array.from(new Int32Array(a.buffer, a.byteOffset, n));
    }
    case 'I64': {
      const a = aligned(d, 8);
      const src = new BigInt64Array(a.buffer, a.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    case 'U8':
      return Float32Array.from(d);
  }
}

/** Integer values as int32 (I64 is range-checked); F32 returns a view when aligned. */
export function toInt32(raw: RawTensor, what = 'tensor'): Int32Array {
  const n = numelOf(raw.shape);
  checkLength(raw, n);
  if (!LITTLE_ENDIAN) throw new Error('raw tensors need a little-endian host');
  const d = raw.data;
  switch (raw.dtype) {
    case 'I32': {
      const a = aligned(d, 4);
      return new Int32Array(a.buffer, a.byteOffset, n);
    }
    case 'I64': {
      const a = aligned(d, 8);
      const src = new BigInt64Array(a.buffer, a.byteOffset, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = src[i];
        if (v > 2147483647n || v < -2147483648n) {
          throw new Error(`${what}: I64 value ${v} at index ${i} does not fit in int32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    case 'U8':
      return Int32Array.from(d);
    default:
      throw new Error(`${what}: cannot read ${raw.dtype} as int32, expected I32, I64 or U8`);
  }
}

function checkLength(raw: RawTensor, n: number): void {
  const want = n * DTYPE_BYTES[raw.dtype];
  if (raw.data.byteLength !== want) {
    throw new Error(`raw tensor ${raw.dtype} ${shapeStr(raw.shape)}: expected ${want} bytes, found ${raw.data.byteLength}`);
  }
}

/** float32 -> IEEE half bits with round-to-nearest-even (overflow to inf, NaN kept quiet). */
export function floatToHalfBits(f: number): number {
  f32[0] = f;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let man = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift in the implicit bit, then round the dropped bits.
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = man & ((1 << shift) - 1);
    let h = man >>> shift;
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // a carry into the exponent is correct
  return sign | h;
}

/** float32 -> bfloat16 bits with round-to-nearest-even. */
export function floatToBf16Bits(f: number): number {
  f32[0] = f;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Converts between float dtypes (F32, F16, BF16); the same dtype returns the input unchanged. */
export function castFloat(raw: RawTensor, dtype: 'F32' | 'F16' | 'BF16'): RawTensor {
  if (raw.dtype === dtype) return raw;
  const v = toFloat32(raw); // a fresh array here, since raw is not F32
  if (dtype === 'F32') return fromFloat32(v, raw.shape);
  const out = new Uint16Array(v.length);
  const conv = dtype === 'F16' ? floatToHalfBits : floatToBf16Bits;
  for (let i = 0; i < v.length; i++) out[i] = conv(v[i]);
  return rawTensor(dtype, raw.shape, new Uint8Array(out.buffer));
}

/** Swaps the two axes of a 2-D tensor (any dtype), into new memory. */
export function transpose2d(raw: RawTensor, what = 'tensor'): RawTensor {
  if (raw.shape.length !== 2) throw new Error(`${what}: transpose needs 2 dims, found shape ${shapeStr(raw.shape)}`);
  const [r, c] = raw.shape;
  const es = DTYPE_BYTES[raw.dtype];
  const src = raw.data;
  const out = new Uint8Array(src.byteLength);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) {
      const s = (i * c + j) * es;
      const d = (j * r + i) * es;
      for (let b = 0; b < es; b++) out[d + b] = src[s + b];
    }
  }
  return { dtype: raw.dtype, shape: [c, r], data: out };
}

/** Stacks tensors along dim 0; trailing dims and dtype must agree. */
export function concatRows(parts: readonly RawTensor[], what = 'concat'): RawTensor {
  if (parts.length === 0) throw new Error(`${what}: nothing to concatenate`);
  const first = parts[0];
  const tail = first.shape.slice(1);
  let rows = 0;
  for (const p of parts) {
    if (p.dtype !== first.dtype) throw new Error(`${what}: dtype ${p.dtype} differs from ${first.dtype}`);
    if (p.shape.length !== first.shape.length || p.shape.slice(1).some((s, i) => s !== tail[i])) {
      throw new Error(`${what}: shape ${shapeStr(p.shape)} does not stack with ${shapeStr(first.shape)}`);
    }
    rows += p.shape[0];
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.data.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.byteLength;
  }
  return { dtype: first.dtype, shape: [rows, ...tail], data: out };
}

/** Splits dim 0 into `count` equal parts, as views (no copy). */
export function splitRows(raw: RawTensor, count: number, what = 'split'): RawTensor[] {
  const rows = raw.shape[0];
  if (raw.shape.length === 0 || rows % count !== 0) {
    throw new Error(`${what}: cannot split shape ${shapeStr(raw.shape)} into ${count} equal parts along dim 0`);
  }
  const step = raw.data.byteLength / count;
  const shape = [rows / count, ...raw.shape.slice(1)];
  return Array.from({ length: count }, (_, i) => ({
    dtype: raw.dtype,
    shape: [...shape],
    data: raw.data.subarray(i * step, (i + 1) * step),
  }));
}
