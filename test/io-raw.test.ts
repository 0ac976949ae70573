import { describe, expect, test } from 'vitest';
import {
  castFloat,
  concatRows,
  floatToBf16Bits,
  floatToHalfBits,
  fromFloat32,
  rawTensor,
  splitRows,
  toFloat32,
  toInt32,
  transpose2d,
} from '../lib/io/raw.js';

// IEEE binary16 decoded in float64 from its definition, independent of the lookup table.
function halfRef(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

function bytes(a: Uint16Array | Float32Array | Int32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

describe('raw tensor conversions', () => {
  test('F16 -> float32 matches the binary16 definition for all 65536 bit patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = toFloat32(rawTensor('F16', [65536], bytes(all)));
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const ref = halfRef(h);
      if (Number.isNaN(ref) ? !Number.isNaN(f[h]) : !Object.is(f[h], ref)) bad.push(h);
    }
    expect(bad).toEqual([]);
  });

  test('BF16 -> float32 is the upper half of the float32 bits', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = toFloat32(rawTensor('BF16', [256, 256], bytes(all)));
    const dv = new DataView(new ArrayBuffer(4));
    for (let h = 0; h < 65536; h += 7) {
      dv.setUint32(0, h * 65536);
      const ref = dv.getFloat32(0);
      if (Number.isNaN(ref)) expect(Number.isNaN(f[h])).toBe(true);
      else expect(f[h]).toBe(ref);
    }
  });

  test('float32 -> F16 picks the nearest half (ties to even) and round-trips every half', () => {
    const bad: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const v = halfRef(h);
      const got = floatToHalfBits(v);
      if (Number.isNaN(v) ? (got & 0x7c00) !== 0x7c00 || (got & 0x3ff) === 0 : got !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
    // Random finite floats: neither neighbour of the chosen half (same sign) may be strictly closer,
    // and on a tie the chosen half must be even.
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const worse: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const v = Math.fround((rnd() - 0.5) * Math.pow(2, Math.floor(rnd() * 40) - 26));
      const h = floatToHalfBits(v);
      const err = Math.abs(halfRef(h) - v);
      const mag = h & 0x7fff;
      for (const n of [mag - 1, mag + 1]) {
        if (n < 0 || n > 0x7bff) continue;
        const nerr = Math.abs(halfRef((h & 0x8000) | n) - v);
        if (nerr < err || (nerr === err && h & 1)) worse.push(v);
      }
    }
    expect(worse).toEqual([]);
    expect(floatToHalfBits(65520)).toBe(0x7c00); // halfway to the next binade rounds to inf
    expect(floatToHalfBits(65519)).toBe(0x7bff);
    expect(floatToHalfBits(2 ** -25)).toBe(0); // tie between 0 and the smallest subnormal: even
    expect(floatToHalfBits(Math.fround(2 ** -25 * 1.0001))).toBe(1);
  });

  test('float32 -> BF16 rounds to nearest even', () => {
    const dv = new DataView(new ArrayBuffer(4));
    const f = (bits: number) => (dv.setUint32(0, bits), dv.getFloat32(0));
    expect(floatToBf16Bits(f(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(floatToBf16Bits(f(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(floatToBf16Bits(f(0x3f808001))).toBe(0x3f81);
    expect(floatToBf16Bits(f(0x7f7fffff))).toBe(0x7f80); // overflow to inf
    expect(floatToBf16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
  });

  test('castFloat F32 -> F16 -> F32 equals per-element rounding', () => {
    const v = Float32Array.from([0, -1.5, 3.14159, 1e-6, 70000, -2e-8]);
    const h = castFloat(fromFloat32(v, [2, 3]), 'F16');
    expect(h.dtype).toBe('F16');
    expect(h.shape).toEqual([2, 3]);
    const back = toFloat32(h);
    for (let i = 0; i < v.length; i++) expect(back[i]).toBe(halfRef(floatToHalfBits(v[i])));
  });

  test('toInt32 range-checks I64 and refuses floats', () => {
    const ok = toInt32(rawTensor('I64', [3], bytes(BigInt64Array.from([0n, -5n, 2147483647n]))));
    expect([...ok]).toEqual([0, -5, 2147483647]);
    expect(() => toInt32(rawTensor('I64', [1], bytes(BigInt64Array.from([2n ** 40n]))), 'ids')).toThrow(
      /ids: I64 value 1099511627776 at index 0 does not fit in int32/,
    );
    expect(() => toInt32(fromFloat32(new Float32Array(2)))).toThrow(/cannot read F32 as int32/);
  });

  test('unaligned views are copied, aligned F32 views share memory', () => {
    const buf = new Uint8Array(13);
    new DataView(buf.buffer).setFloat32(1, 2.5, true);
    new DataView(buf.buffer).setFloat32(5, -7, true);
    expect([...toFloat32(rawTensor('F32', [2], buf.subarray(1, 9)))]).toEqual([2.5, -7]);
    const arr = Float32Array.from([1, 2]);
    const view = toFloat32(fromFloat32(arr));
    arr[0] = 9;
    expect(view[0]).toBe(9);
  });

  test('rawTensor checks byte length', () => {
    expect(() => rawTensor('F32', [2, 3], new Uint8Array(20), 'w')).toThrow(/w: F32 \[2, 3\] needs 24 bytes, found 20/);
  });

  test('transpose, concat and split agree with index arithmetic', () => {
    const a = fromFloat32(Float32Array.from({ length: 6 }, (_, i) => i), [2, 3]);
    const t = transpose2d(a);
    expect(t.shape).toEqual([3, 2]);
    const tv = toFloat32(t);
    for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) expect(tv[j * 2 + i]).toBe(i * 3 + j);
    const c = concatRows([a, a, fromFloat32(Float32Array.from([7, 8, 9]), [1, 3])]);
    expect(c.shape).toEqual([5, 3]);
    expect([...toFloat32(c)].slice(12)).toEqual([7, 8, 9]);
    const parts = splitRows(fromFloat32(Float32Array.from({ length: 12 }, (_, i) => i), [6, 2]), 3);
    expect(parts.map((p) => [...toFloat32(p)])).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9, 10, 11],
    ]);
    expect(() => splitRows(a, 3)).toThrow(/cannot split shape \[2, 3\] into 3/);
    expect(() => concatRows([a, t])).toThrow(/does not stack/);
  });
});
