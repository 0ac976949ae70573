import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { ZipReader, crc32, writeZip } from '../lib/io/zip.js';
import { HAVE_PYTHON, python } from './io-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tsclip-zip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const text = Buffer.from('the quick brown fox '.repeat(200));
const binary = Uint8Array.from({ length: 4099 }, (_, i) => (i * 7919) & 0xff);

describe('zip reader and writer', () => {
  test('CRC-32 of a known string', () => {
    // The standard check value of CRC-32/ISO-HDLC.
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  test('stored and deflated entries round-trip, from memory and from a file', async () => {
    const zip = writeZip([
      { name: 'a/data.pkl', data: text, method: 'deflate' },
      { name: 'a/data/0', data: binary },
      { name: 'a/empty', data: new Uint8Array(0) },
    ]);
    const file = path.join(dir, 'rt.zip');
    writeFileSync(file, zip);
    for (const r of [await ZipReader.fromBuffer(zip), await ZipReader.open(file)]) {
      expect(r.names()).toEqual(['a/data.pkl', 'a/data/0', 'a/empty']);
      expect(r.entries.get('a/data.pkl')!.method).toBe(8);
      expect(r.entries.get('a/data.pkl')!.compressedSize).toBeLessThan(text.length);
      expect(Buffer.from(await r.read('a/data.pkl')).equals(text)).toBe(true);
      expect([...(await r.read('a/data/0'))]).toEqual([...binary]);
      expect((await r.read('a/empty')).length).toBe(0);
      await expect(r.read('nope')).rejects.toThrow(/no entry "nope"/);
      await r.close();
    }
  });

  test('a corrupted byte fails the CRC check', async () => {
    const zip = Buffer.from(writeZip([{ name: 'x', data: binary }]));
    zip[30 + 1 + 100] ^= 0xff; // inside the stored data of "x"
    const r = await ZipReader.fromBuffer(zip, 'bad.zip');
    await expect(r.read('x')).rejects.toThrow(/zip bad\.zip: entry "x": CRC-32 0x[0-9a-f]{8} does not match the directory's 0x[0-9a-f]{8}/);
  });

  test('truncated or foreign files are named errors', async () => {
    const zip = writeZip([{ name: 'x', data: binary }]);
    await expect(ZipReader.fromBuffer(zip.subarray(0, 10), 't.zip')).rejects.toThrow(/zip t\.zip: file is 10 bytes, too short/);
    await expect(ZipReader.fromBuffer(zip.subarray(0, zip.length - 30), 't.zip')).rejects.toThrow(/no end-of-central-directory record/);
    await expect(ZipReader.fromBuffer(new Uint8Array(100), 'z.zip')).rejects.toThrow(/zip z\.zip: no end-of-central-directory record/);
  });

  test('ZIP64 sizes and offsets in the extra field and end records', async () => {
    // Rewrite a plain archive so every 32-bit field is saturated and the real values live in ZIP64 records.
    const data = binary;
    const name = Buffer.from('big/data/0');
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const extra = Buffer.alloc(28);
    extra.writeUInt16LE(1, 0);
    extra.writeUInt16LE(24, 2);
    extra.writeBigUInt64LE(BigInt(data.length), 4);
    extra.writeBigUInt64LE(BigInt(data.length), 12);
    extra.writeBigUInt64LE(0n, 20);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(0xffffffff, 20);
    central.writeUInt32LE(0xffffffff, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt16LE(extra.length, 30);
    central.writeUInt32LE(0xffffffff, 42);
    const cdOffset = local.length + name.length + data.length;
    const cdSize = central.length + name.length + extra.length;
    const z64 = Buffer.alloc(56);
    z64.writeUInt32LE(0x06064b50, 0);
    z64.writeBigUInt64LE(44n, 4);
    z64.writeBigUInt64LE(1n, 24);
    z64.writeBigUInt64LE(1n, 32);
    z64.writeBigUInt64LE(BigInt(cdSize), 40);
    z64.writeBigUInt64LE(BigInt(cdOffset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(cdOffset + cdSize), 8);
    loc.writeUInt32LE(1, 16);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(0xffff, 8);
    end.writeUInt16LE(0xffff, 10);
    end.writeUInt32LE(0xffffffff, 12);
    end.writeUInt32LE(0xffffffff, 16);
    const zip = Buffer.concat([local, name, data, central, name, extra, z64, loc, end]);
    const r = await ZipReader.fromBuffer(zip, 'z64.zip');
    expect(r.entries.get('big/data/0')).toMatchObject({ size: data.length, compressedSize: data.length, localHeaderOffset: 0 });
    expect([...(await r.read('big/data/0'))]).toEqual([...data]);
  });
});

describe.skipIf(!HAVE_PYTHON)('zip files written by CPython zipfile (needs python3; skipped when missing)', () => {
  test('stored, deflated and commented archives read back', async () => {
    const file = path.join(dir, 'py.zip');
    const r = python(
      [
        'import sys, zipfile',
        'z = zipfile.ZipFile(sys.argv[1], "w")',
        'z.writestr("arch/data.pkl", b"abc" * 500, compress_type=zipfile.ZIP_DEFLATED)',
        'z.writestr("arch/data/0", bytes(range(256)) * 3, compress_type=zipfile.ZIP_STORED)',
        'z.comment = b"a trailing comment"',
        'z.close()',
      ].join('\n'),
      [file],
    );
    expect(r.stderr).toBe('');
    const zr = await ZipReader.open(file);
    expect(Buffer.from(await zr.read('arch/data.pkl')).toString()).toBe('abc'.repeat(500));
    const stored = await zr.read('arch/data/0');
    expect(stored.length).toBe(768);
    expect(stored[255]).toBe(255);
    expect(stored[256]).toBe(0);
    await zr.close();
  });
});
