import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { DTYPE_BYTES, rawTensor, toFloat32, toInt32, type RawTensor } from '../lib/io/raw.js';
import { parseSafetensors, readSafetensors, readSafetensorsHeader, writeSafetensors } from '../lib/io/safetensors.js';
import { FIXTURES, HAVE_FIXTURES } from './io-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tsclip-st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file with a hand-written header (for corrupt cases) followed by `data`. */
function craft(name: string, header: unknown, data: Uint8Array | number, lengthOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const body = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  const p = path.join(dir, name);
  writeFileSync(p, Buffer.concat([len, json, body]));
  return p;
}

function fixtureFiles(): string[] {
  if (!HAVE_FIXTURES) return [];
  return readdirSync(FIXTURES).flatMap((d) => {
    const sub = path.join(FIXTURES, d);
    return readdirSync(sub)
      .filter((f) => f.endsWith('.safetensors'))
      .map((f) => path.join(sub, f));
  });
}

describe.skipIf(!HAVE_FIXTURES)('safetensors fixtures (needs ../shared/fixtures; skipped when missing)', () => {
  const files = fixtureFiles();
  test('there are fixture files to read', () => {
    expect(files.length).toBeGreaterThan(5);
  });
  test.each(files.map((f) => [path.relative(FIXTURES, f), f]))('%s: dtypes, shapes and bytes match the file', async (_, file) => {
    // Independent reading of the same file: Node's Buffer and JSON, no code under test.
    const buf = readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const { tensors, metadata } = await readSafetensors(file);
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    expect([...tensors.keys()].sort()).toEqual(names.sort());
    expect(metadata).toEqual((header as Record<string, unknown>).__metadata__ ?? {});
    for (const k of names) {
      const h = header[k];
      const t = tensors.get(k)!;
      expect(t.dtype).toBe(h.dtype);
      expect(t.shape).toEqual(h.shape);
      const start = 8 + n + h.data_offsets[0];
      expect(Buffer.compare(Buffer.from(t.data), buf.subarray(start, 8 + n + h.data_offsets[1]))).toBe(0);
      // First element decoded both ways.
      if (t.data.byteLength > 0 && t.dtype === 'F32') expect(toFloat32(t)[0]).toBe(buf.readFloatLE(start));
      if (t.data.byteLength > 0 && t.dtype === 'I32') expect(toInt32(t)[0]).toBe(buf.readInt32LE(start));
    }
    const header2 = await readSafetensorsHeader(file);
    expect([...header2.tensors.keys()].sort()).toEqual(names.sort());
    const inMemory = parseSafetensors(buf, file);
    expect(inMemory.tensors.size).toBe(names.length);
  });
});

function sample(): Record<string, RawTensor> {
  const f32 = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 3);
  const f16 = Uint16Array.from([0x3c00, 0xc000, 0x7bff]);
  const bf16 = Uint16Array.from([0x3f80, 0x4049]);
  const i64 = BigInt64Array.from([1n, -(2n ** 40n)]);
  const i32 = Int32Array.from([7, -8, 9]);
  const u8 = Uint8Array.from([1, 2, 255]);
  const b = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return {
    'a.weight': rawTensor('F32', [3, 4], b(f32)),
    half: rawTensor('F16', [3], b(f16)),
    bf: rawTensor('BF16', [2, 1], b(bf16)),
    ids: rawTensor('I64', [2], b(i64)),
    count: rawTensor('I32', [3], b(i32)),
    mask: rawTensor('U8', [3], b(u8)),
    scalar: rawTensor('F32', [], b(Float32Array.from([42]))),
    empty: rawTensor('F32', [0, 5], new Uint8Array(0)),
  };
}

describe('safetensors writer', () => {
  test('round trip keeps names, dtypes, shapes, bytes and metadata; tensors stay aligned', async () => {
    const src = sample();
    const file = path.join(dir, 'rt.safetensors');
    await writeSafetensors(file, src, { format: 'pt', note: 'hello' });
    const { tensors, metadata } = await readSafetensors(file);
    expect(metadata).toEqual({ format: 'pt', note: 'hello' });
    expect([...tensors.keys()].sort()).toEqual(Object.keys(src).sort());
    for (const [k, t] of Object.entries(src)) {
      const r = tensors.get(k)!;
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect([...r.data]).toEqual([...t.data]);
      expect(r.data.byteOffset % DTYPE_BYTES[r.dtype]).toBe(0);
    }
    const buf = readFileSync(file);
    expect(Number(buf.readBigUInt64LE(0)) % 8).toBe(0);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  test('overwrites an existing file in place', async () => {
    const file = path.join(dir, 'over.safetensors');
    writeFileSync(file, 'old contents');
    await writeSafetensors(file, { x: sample().count });
    expect([...toInt32((await readSafetensors(file)).tensors.get('x')!)]).toEqual([7, -8, 9]);
  });

  test('refuses a tensor whose bytes do not match its shape', async () => {
    const file = path.join(dir, 'bad-write.safetensors');
    await expect(writeSafetensors(file, { w: { dtype: 'F32', shape: [2, 2], data: new Uint8Array(12) } })).rejects.toThrow(
      /tensor "w": F32 \[2, 2\] needs 16 bytes, found 12/,
    );
    expect(existsSync(file)).toBe(false);
  });
});

describe('safetensors validation names the file, the tensor, expected and found', () => {
  const good = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } };

  test('file shorter than 8 bytes', async () => {
    const p = path.join(dir, 'short.safetensors');
    writeFileSync(p, Buffer.from([1, 2, 3]));
    await expect(readSafetensors(p)).rejects.toThrow(`safetensors ${p}: file is 3 bytes, expected at least 8`);
  });

  test('header length beyond the file', async () => {
    const p = craft('hlen.safetensors', good, 12, 5000n);
    await expect(readSafetensors(p)).rejects.toThrow(/hlen\.safetensors: header length 5000 exceeds the \d+ bytes after the length field/);
  });

  test('absurd header length', async () => {
    const p = craft('huge.safetensors', good, 12, 2n ** 40n);
    await expect(readSafetensors(p)).rejects.toThrow(/huge\.safetensors: header length 1099511627776 exceeds the 104857600-byte limit/);
  });

  test('invalid JSON', async () => {
    const p = craft('json.safetensors', '{"w": {"dtype": "F32",', 12);
    await expect(readSafetensors(p)).rejects.toThrow(/json\.safetensors: header is not valid JSON/);
  });

  test('truncated copy of a real file', async () => {
    const file = path.join(dir, 'full.safetensors');
    await writeSafetensors(file, sample());
    const buf = readFileSync(file);
    const p = path.join(dir, 'trunc.safetensors');
    writeFileSync(p, buf.subarray(0, buf.length - 3));
    // The largest elements are laid out first, so the last bytes belong to the U8 tensor "mask".
    await expect(readSafetensors(p)).rejects.toThrow(/trunc\.safetensors: tensor "mask": data_offsets \[\d+, \d+\] run past the \d+-byte data region \(file truncated\?\)/);
  });

  test('overlapping offsets', async () => {
    const p = craft('overlap.safetensors', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8);
    await expect(readSafetensors(p)).rejects.toThrow(/overlap\.safetensors: tensor "b" at \[4, 8\] overlaps tensor "w" at \[0, 8\]/);
  });

  test('gap between tensors and trailing bytes', async () => {
    const gap = craft('gap.safetensors', { w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12);
    await expect(readSafetensors(gap)).rejects.toThrow(/gap\.safetensors: bytes \[4, 8\) of the data region belong to no tensor \(next is "b"\)/);
    const tail = craft('tail.safetensors', good, 16);
    await expect(readSafetensors(tail)).rejects.toThrow(/tail\.safetensors: tensors cover 12 bytes but the data region holds 16/);
  });

  test('dtype size times shape differs from the byte range', async () => {
    const p = craft('size.safetensors', { w: { dtype: 'F16', shape: [3], data_offsets: [0, 8] } }, 8);
    await expect(readSafetensors(p)).rejects.toThrow(/size\.safetensors: tensor "w": F16 \[3\] needs 6 bytes, data_offsets \[0, 8\] hold 8/);
  });

  test('unknown dtype and malformed entries', async () => {
    const p = craft('dtype.safetensors', { w: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, 8);
    await expect(readSafetensors(p)).rejects.toThrow(/dtype\.safetensors: tensor "w": unknown dtype "F8_E4M3", expected one of F32, F16/);
    const q = craft('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4);
    await expect(readSafetensors(q)).rejects.toThrow(/tensor "w": shape must be a list of non-negative integers, found \[-1\]/);
    const r = craft('meta.safetensors', { __metadata__: { a: 1 }, ...good }, 12);
    await expect(readSafetensors(r)).rejects.toThrow(/__metadata__ "a": expected a string, found number/);
  });

  test('in-memory parsing applies the same checks', () => {
    const bytes = readFileSync(craft('mem.safetensors', good, 11));
    expect(() => parseSafetensors(bytes, 'mem')).toThrow(/safetensors mem: tensor "b": data_offsets \[8, 12\] run past the 11-byte data region/);
  });
});
