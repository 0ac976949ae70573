// safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the data region. Every header claim is checked before any tensor is handed out, and errors
// name the file, the tensor, what was expected and what was found.
import { promises as fsp } from 'node:fs';
import { MAX_BUFFER, readRange, writeFileAtomic } from './fsutil.js';
import { DTYPE_BYTES, RAW_DTYPES, isRawDType, numelOf, shapeStr, type RawDType, type RawTensor } from './raw.js';

/** Larger headers are refused: real ones are a few hundred kilobytes at most. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsFile {
  tensors: Map<string, RawTensor>;
  metadata: Record<string, string>;
}

interface HeaderEntry {
  name: string;
  dtype: RawDType;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  entries: HeaderEntry[];
  metadata: Record<string, string>;
  /** Byte offset of the data region in the file. */
  dataStart: number;
}

function fail(file: string, msg: string): never {
  throw new Error(`safetensors ${file}: ${msg}`);
}

/** Reads the header length from the first 8 bytes and checks it against the file size. */
function headerLength(file: string, first8: Uint8Array, fileSize: number): number {
  if (fileSize < 8) fail(file, `file is ${fileSize} bytes, expected at least 8 (the header length)`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n > BigInt(fileSize - 8)) fail(file, `header length ${n} exceeds the ${fileSize - 8} bytes after the length field`);
  return Number(n);
}

function parseHeader(file: string, json: Uint8Array, dataStart: number, dataLength: number): Header {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'));
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `header is not a JSON object`);
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(file, `__metadata__ must be an object of strings`);
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') fail(file, `__metadata__ "${k}": expected a string, found ${typeof s}`);
        metadata[k] = s;
      }
      continue;
    }
    entries.push(parseEntry(file, name, v, dataLength));
  }
  checkCoverage(file, entries, dataLength);
  return { entries, metadata, dataStart };
}

function parseEntry(file: string, name: string, v: unknown, dataLength: number): HeaderEntry {
  const t = `tensor "${name}"`;
  if (typeof v !== 'object' || v === null) fail(file, `${t}: expected {dtype, shape, data_offsets}, found ${JSON.stringify(v)}`);
  const { dtype, shape, data_offsets: offs } = v as Record<string, unknown>;
  if (!isRawDType(dtype)) fail(file, `${t}: unknown dtype ${JSON.stringify(dtype)}, expected one of ${RAW_DTYPES.join(', ')}`);
  if (!Array.isArray(shape) || shape.some((s) => !Number.isSafeInteger(s) || (s as number) < 0)) {
    fail(file, `${t}: shape must be a list of non-negative integers, found ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => !Number.isSafeInteger(o) || (o as number) < 0)) {
    fail(file, `${t}: data_offsets must be [begin, end], found ${JSON.stringify(offs)}`);
  }
  const [begin, end] = offs as number[];
  if (end < begin) fail(file, `${t}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLength) {
    fail(file, `${t}: data_offsets [${begin}, ${end}] run past the ${dataLength}-byte data region (file truncated?)`);
  }
  const want = numelOf(shape as number[]) * DTYPE_BYTES[dtype];
  if (end - begin !== want) {
    fail(file, `${t}: ${dtype} ${shapeStr(shape as number[])} needs ${want} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

// The tensors must tile the data region exactly: no overlap (two tensors aliasing bytes), no gap.
function checkCoverage(file: string, entries: HeaderEntry[], dataLength: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: HeaderEntry | undefined;
  for (const e of sorted) {
    if (e.begin < pos) {
      fail(file, `tensor "${e.name}" at [${e.begin}, ${e.end}] overlaps tensor "${prev!.name}" at [${prev!.begin}, ${prev!.end}]`);
    }
    if (e.begin > pos) fail(file, `bytes [${pos}, ${e.begin}) of the data region belong to no tensor (next is "${e.name}")`);
    pos = e.end;
    prev = e;
  }
  if (pos !== dataLength) fail(file, `tensors cover ${pos} bytes but the data region holds ${dataLength}`);
}

function sliceTensors(header: Header, region: Uint8Array, regionStart: number): Map<string, RawTensor> {
  const tensors = new Map<string, RawTensor>();
  for (const e of header.entries) {
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: [...e.shape],
      data: region.subarray(e.begin - regionStart, e.end - regionStart),
    });
  }
  return tensors;
}

/** Parses a whole safetensors file held in memory; tensors are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>'): SafetensorsFile {
  const n = headerLength(file, bytes.subarray(0, 8), bytes.byteLength);
  const header = parseHeader(file, bytes.subarray(8, 8 + n), 8 + n, bytes.byteLength - 8 - n);
  return { tensors: sliceTensors(header, bytes.subarray(8 + n), 0), metadata: header.metadata };
}

async function readHeader(fh: fsp.FileHandle, file: string): Promise<{ header: Header; size: number }> {
  const size = (await fh.stat()).size;
  const first = size >= 8 ? await readRange(fh, 0, 8, file) : new Uint8Array(0);
  const n = headerLength(file, first, size);
  const json = await readRange(fh, 8, n, file);
  return { header: parseHeader(file, json, 8 + n, size - 8 - n), size };
}

/** Reads only the header: names, dtypes, shapes and metadata, without touching the data region. */
export async function readSafetensorsHeader(
  file: string,
): Promise<{ tensors: Map<string, { dtype: RawDType; shape: number[] }>; metadata: Record<string, string> }> {
  const fh = await fsp.open(file, 'r');
  try {
    const { header } = await readHeader(fh, file);
    return {
      tensors: new Map(header.entries.map((e) => [e.name, { dtype: e.dtype, shape: [...e.shape] }])),
      metadata: header.metadata,
    };
  } finally {
    await fh.close();
  }
}

/**
 * Reads a safetensors file: the header first, then the data region in one read into one buffer
 * that all tensors view (per-tensor buffers only when the region exceeds Node's buffer limit).
 */
export async function readSafetensors(file: string): Promise<SafetensorsFile> {
  const fh = await fsp.open(file, 'r');
  try {
    const { header, size } = await readHeader(fh, file);
    const dataLength = size - header.dataStart;
    if (dataLength <= MAX_BUFFER) {
      const region = await readRange(fh, header.dataStart, dataLength, file);
      return { tensors: sliceTensors(header, region, 0), metadata: header.metadata };
    }
    const tensors = new Map<string, RawTensor>();
    for (const e of header.entries) {
      const data = await readRange(fh, header.dataStart + e.begin, e.end - e.begin, file);
      tensors.set(e.name, { dtype: e.dtype, shape: [...e.shape], data });
    }
    return { tensors, metadata: header.metadata };
  } finally {
    await fh.close();
  }
}

export type TensorInput = { dtype: RawDType; shape: readonly number[]; data: Uint8Array };

/**
 * Lays out a file: header bytes (padded with spaces to a multiple of 8) and the tensor data chunks
 * in file order. Larger elements go first so every tensor stays aligned to its element size.
 */
export function serializeSafetensors(
  tensors: Record<string, TensorInput> | Map<string, TensorInput>,
  metadata?: Record<string, string>,
  file = '<buffer>',
): Uint8Array[] {
  const list = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))];
  for (const [name, t] of list) {
    if (name === '__metadata__') fail(file, `"__metadata__" is reserved and cannot name a tensor`);
    if (!isRawDType(t.dtype)) fail(file, `tensor "${name}": unknown dtype ${JSON.stringify(t.dtype)}, expected one of ${RAW_DTYPES.join(', ')}`);
    const want = numelOf(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== want) {
      fail(file, `tensor "${name}": ${t.dtype} ${shapeStr(t.shape)} needs ${want} bytes, found ${t.data.byteLength}`);
    }
  }
  list.sort(([na, a], [nb, b]) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (na < nb ? -1 : na > nb ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(file, `metadata "${k}": expected a string, found ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  let off = 0;
  for (const [name, t] of list) {
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return [len, json, ...list.map(([, t]) => t.data)];
}

/** Writes a safetensors file atomically (temp file in the same directory, fsync, rename). */
export async function writeSafetensors(
  file: string,
  tensors: Record<string, TensorInput> | Map<string, TensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(file, serializeSafetensors(tensors, metadata, file));
}
