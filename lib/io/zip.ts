// A zip reader for PyTorch archives (stored and deflated entries, ZIP64 sizes and offsets) and a
// small in-memory writer used for round trips. Entries are read on demand, one positioned read each,
// so an archive of gigabytes never sits in memory twice.
import { promises as fsp } from 'node:fs';
import * as zlib from 'node:zlib';
import { readRange } from './fsutil.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  localHeaderOffset: number;
}

interface Source {
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;

let crcTable: Int32Array | undefined;

/** CRC-32 (IEEE), using zlib's when this Node has it. */
export function crc32(data: Uint8Array): number {
  const z = (zlib as unknown as { crc32?: (d: Uint8Array) => number }).crc32;
  if (z) return z(data) >>> 0;
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(dv: DataView, off: number, what: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what}: 64-bit value ${v} is too large`);
  return Number(v);
}

export class ZipReader {
  readonly entries: Map<string, ZipEntry>;

  private constructor(
    readonly file: string,
    private readonly src: Source,
    entries: Map<string, ZipEntry>,
  ) {
    this.entries = entries;
  }

  static async open(file: string): Promise<ZipReader> {
    const fh = await fsp.open(file, 'r');
    try {
      const size = (await fh.stat()).size;
      const src: Source = { size, read: (o, n) => readRange(fh, o, n, file), close: () => fh.close() };
      return new ZipReader(file, src, await readDirectory(src, file));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Reads from memory; stored entries come back as views into `bytes`. */
  static async fromBuffer(bytes: Uint8Array, file = '<buffer>'): Promise<ZipReader> {
    const src: Source = {
      size: bytes.byteLength,
      read: async (o, n) => {
        if (o + n > bytes.byteLength) throw new Error(`zip ${file}: read of ${n} bytes at ${o} runs past the end (${bytes.byteLength} bytes)`);
        return bytes.subarray(o, o + n);
      },
      close: async () => {},
    };
    return new ZipReader(file, src, await readDirectory(src, file));
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The entry's uncompressed bytes, CRC-checked. */
  async read(name: string): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new Error(`zip ${this.file}: no entry "${name}"`);
    const where = `zip ${this.file}: entry "${name}"`;
    if (e.localHeaderOffset + 30 > this.src.size) throw new Error(`${where}: local header offset ${e.localHeaderOffset} is past the end of the file`);
    const lh = view(await this.src.read(e.localHeaderOffset, 30));
    if (lh.getUint32(0, true) !== SIG_LOCAL) throw new Error(`${where}: bad local header signature at offset ${e.localHeaderOffset}`);
    const start = e.localHeaderOffset + 30 + lh.getUint16(26, true) + lh.getUint16(28, true);
    if (start + e.compressedSize > this.src.size) {
      throw new Error(`${where}: data [${start}, ${start + e.compressedSize}) runs past the end of the file (${this.src.size} bytes; truncated?)`);
    }
    const raw = await this.src.read(start, e.compressedSize);
    let data: Uint8Array;
    if (e.method === 0) data = raw;
    else if (e.method === 8) {
      try {
        data = zlib.inflateRawSync(raw);
      } catch (err) {
        throw new Error(`${where}: deflate data is corrupt (${(err as Error).message})`);
      }
    } else throw new Error(`${where}: compression method ${e.method} is not supported, expected 0 (stored) or 8 (deflate)`);
    if (data.byteLength !== e.size) throw new Error(`${where}: expected ${e.size} bytes, found ${data.byteLength}`);
    const crc = crc32(data);
    if (crc !== e.crc32) throw new Error(`${where}: CRC-32 ${hex(crc)} does not match the directory's ${hex(e.crc32)}`);
    return data;
  }

  async close(): Promise<void> {
    await this.src.close();
  }
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

async function readDirectory(src: Source, file: string): Promise<Map<string, ZipEntry>> {
  const where = `zip ${file}`;
  if (src.size < 22) throw new Error(`${where}: file is ${src.size} bytes, too short for a zip archive (at least 22)`);
  // The end record sits in the last 22 bytes plus a comment of at most 65535 bytes.
  const tailLen = Math.min(src.size, 22 + 0xffff);
  const tailStart = src.size - tailLen;
  const tail = await src.read(tailStart, tailLen);
  const tv = view(tail);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(`${where}: no end-of-central-directory record (not a zip, or truncated)`);
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = tailStart + eocd - 20;
    if (loc < 0) throw new Error(`${where}: ZIP64 markers present but no ZIP64 locator`);
    const lv = view(await src.read(loc, 20));
    if (lv.getUint32(0, true) !== SIG_ZIP64_LOCATOR) throw new Error(`${where}: ZIP64 markers present but no ZIP64 locator`);
    const recOff = u64(lv, 8, where);
    if (recOff + 56 > src.size) throw new Error(`${where}: ZIP64 end record offset ${recOff} is past the end of the file`);
    const rv = view(await src.read(recOff, 56));
    if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) throw new Error(`${where}: bad ZIP64 end record signature at ${recOff}`);
    count = u64(rv, 32, where);
    cdSize = u64(rv, 40, where);
    cdOffset = u64(rv, 48, where);
  }
  if (cdOffset + cdSize > src.size) {
    throw new Error(`${where}: central directory [${cdOffset}, ${cdOffset + cdSize}) runs past the end of the file (${src.size} bytes)`);
  }
  const cd = await src.read(cdOffset, cdSize);
  const cv = view(cd);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.byteLength || cv.getUint32(p, true) !== SIG_CENTRAL) {
      throw new Error(`${where}: central directory entry ${i} of ${count} is missing or corrupt`);
    }
    const flags = cv.getUint16(p + 8, true);
    const method = cv.getUint16(p + 10, true);
    const crc = cv.getUint32(p + 16, true);
    let compressedSize = cv.getUint32(p + 20, true);
    let size = cv.getUint32(p + 24, true);
    const nameLen = cv.getUint16(p + 28, true);
    const extraLen = cv.getUint16(p + 30, true);
    const commentLen = cv.getUint16(p + 32, true);
    let localHeaderOffset = cv.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cd.byteLength) throw new Error(`${where}: central directory entry ${i} overruns the directory`);
    const name = Buffer.from(cd.buffer, cd.byteOffset + p + 46, nameLen).toString('utf8');
    if (flags & 1) throw new Error(`${where}: entry "${name}" is encrypted, which is not supported`);
    // ZIP64 extra field: the 64-bit values appear only for fields saturated at 0xffffffff, in this order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cv.getUint16(x, true);
      const len = cv.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        const next = () => {
          if (q + 8 > x + 4 + len) throw new Error(`${where}: entry "${name}": ZIP64 extra field is too short`);
          const v = u64(cv, q, where);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      x += 4 + len;
    }
    if (entries.has(name)) throw new Error(`${where}: duplicate entry "${name}"`);
    entries.set(name, { name, method, compressedSize, size, crc32: crc, localHeaderOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** Defaults to 'store', as PyTorch writes its archives. */
  method?: 'store' | 'deflate';
}

/** Builds a zip archive in memory (no ZIP64: meant for small archives and round trips). */
export function writeZip(files: readonly ZipInput[]): Uint8Array {
  if (files.length > 0xffff) throw new Error(`writeZip: ${files.length} entries exceed the 65535 a plain zip can list`);
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, 'utf8');
    const deflate = f.method === 'deflate';
    const body = deflate ? zlib.deflateRawSync(f.data) : f.data;
    const crc = crc32(f.data);
    if (offset + 30 + name.length + body.byteLength > 0xffffffff) throw new Error(`writeZip: archive exceeds 4 GiB at "${f.name}"`);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(SIG_LOCAL, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0x0800, 6); // names are UTF-8
    lh.writeUInt16LE(deflate ? 8 : 0, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(body.byteLength, 18);
    lh.writeUInt32LE(f.data.byteLength, 22);
    lh.writeUInt16LE(name.length, 26);
    locals.push(lh, name, body);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(SIG_CENTRAL, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0x0800, 8);
    ch.writeUInt16LE(deflate ? 8 : 0, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(body.byteLength, 20);
    ch.writeUInt32LE(f.data.byteLength, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(offset, 42);
    centrals.push(ch, name);
    offset += 30 + name.length + body.byteLength;
  }
  const cdSize = centrals.reduce((n, c) => n + c.byteLength, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(SIG_EOCD, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(cdSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, ...centrals, end]);
}
