// One entry point for CLIP checkpoints: detects the format by content, returns tensors under the
// original OpenAI names plus the architecture, and writes safetensors or HF directories back out.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  CONFIG_METADATA_KEY,
  checkConfigAgainstWeights,
  configFromMetadata,
  inferConfig,
  looksLikeClip,
  type ClipConfig,
} from './config.js';
import { configFromHF, hfToOriginal, looksLikeHF, readHFDir, writeHFDir } from './hf.js';
import { castFloat, numelOf, toFloat32, type RawTensor } from './raw.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';
import { readTorchArchive } from './torch.js';

export type CheckpointFormat = 'safetensors' | 'openai-pt' | 'hf';

export interface Checkpoint {
  format: CheckpointFormat;
  /** Original OpenAI names (visual.conv1.weight, transformer.resblocks.0.attn.in_proj_weight, ...). */
  tensors: Map<string, RawTensor>;
  /** Present whenever the tensors are a CLIP model. */
  config?: ClipConfig | undefined;
  metadata: Record<string, string>;
}

/** Decides the format from the content: a directory with config.json, a zip, or a safetensors header. */
export async function detectFormat(p: string): Promise<CheckpointFormat> {
  let st;
  try {
    st = await fsp.stat(p);
  } catch (e) {
    throw new Error(`checkpoint ${p}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
  }
  if (st.isDirectory()) {
    try {
      await fsp.access(path.join(p, 'config.json'));
    } catch {
      throw new Error(`checkpoint ${p}: a directory must hold an HF config.json`);
    }
    return 'hf';
  }
  const fh = await fsp.open(p, 'r');
  const head = Buffer.alloc(16);
  try {
    await fh.read(head, 0, 16, 0);
  } finally {
    await fh.close();
  }
  if (head[0] === 0x50 && head[1] === 0x4b && (head[2] === 3 || head[2] === 5)) return 'openai-pt';
  if (st.size >= 9 && head.readBigUInt64LE(0) <= BigInt(st.size - 8) && head[8] === 0x7b) return 'safetensors';
  if (head[0] === 0x80 && head[1] <= 5) {
    throw new Error(`checkpoint ${p}: a bare pickle (torch.save before PyTorch 1.6) is not supported; re-save it with a newer torch.save or as safetensors`);
  }
  throw new Error(`checkpoint ${p}: unrecognized format (first bytes ${head.subarray(0, 8).toString('hex')}), expected safetensors, a PyTorch zip or an HF directory`);
}

// Scalars the released OpenAI models keep as buffers beside the weights; build_model drops them.
const OPENAI_SCALARS = ['input_resolution', 'context_length', 'vocab_size'];

function scalarString(t: RawTensor): string {
  if (t.dtype === 'I64') return new DataView(t.data.buffer, t.data.byteOffset, 8).getBigInt64(0, true).toString();
  return String(toFloat32(t)[0]);
}

/** The declared config (if any) checked against the weights, or the one the weights imply. */
function resolveConfig(tensors: Map<string, RawTensor>, declared: ClipConfig | undefined, where: string): ClipConfig | undefined {
  if (!looksLikeClip(tensors.keys())) {
    if (declared) throw new Error(`${where}: metadata declares a CLIP config but the tensors are not a CLIP model`);
    return undefined;
  }
  const inferred = inferConfig(tensors, declared?.activation);
  if (!declared) return inferred;
  checkConfigAgainstWeights(declared, inferred, where);
  return declared;
}

/** Reads a checkpoint of any supported format. */
export async function readCheckpoint(pathOrDir: string): Promise<Checkpoint> {
  const format = await detectFormat(pathOrDir);
  if (format === 'hf') {
    const hf = await readHFDir(pathOrDir);
    return { format, ...hf };
  }
  let tensors: Map<string, RawTensor>;
  let metadata: Record<string, string>;
  if (format === 'safetensors') {
    ({ tensors, metadata } = await readSafetensors(pathOrDir));
  } else {
    const archive = await readTorchArchive(pathOrDir);
    tensors = archive.tensors;
    metadata = { ...archive.extras };
    for (const k of OPENAI_SCALARS) {
      const t = tensors.get(k);
      if (t && numelOf(t.shape) === 1) {
        metadata[k] = scalarString(t);
        tensors.delete(k);
      }
    }
  }
  // A lone HF weights file (no config.json beside it): map the names, take sizes from the shapes.
  if (looksLikeHF(tensors.keys())) {
    tensors = hfToOriginal(tensors, pathOrDir);
    return { format, tensors, config: configFromHF({}, tensors, pathOrDir), metadata };
  }
  const declared = configFromMetadata(metadata, pathOrDir);
  return { format, tensors, config: resolveConfig(tensors, declared, pathOrDir), metadata };
}

export interface WriteOptions {
  /** Stored as JSON under "tsclip.config"; inferred from the weights when omitted. */
  config?: ClipConfig | undefined;
  metadata?: Record<string, string>;
}

/** Writes original-name tensors as safetensors, with the config in the metadata. */
export async function writeCheckpoint(
  file: string,
  tensors: Map<string, RawTensor> | Record<string, RawTensor>,
  opts: WriteOptions = {},
): Promise<void> {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const config = resolveConfig(map, opts.config, file);
  const metadata: Record<string, string> = { ...opts.metadata, format: 'openai-clip' };
  // tsclip.config replaces the original-style "config" field, which cannot state heads or activation.
  delete metadata.config;
  if (config) metadata[CONFIG_METADATA_KEY] = JSON.stringify(config);
  await writeSafetensors(file, map, metadata);
}

export interface ConvertOptions {
  /** 'safetensors' (original names, the default) or 'hf' (a directory with config.json). */
  format?: 'safetensors' | 'hf';
  /** Casts floating-point tensors; integer tensors are kept as they are. */
  dtype?: 'F32' | 'F16' | 'BF16';
}

/** Reads any supported checkpoint and writes it in another format (the `tsclip convert` command). */
export async function convertCheckpoint(
  inPath: string,
  outPath: string,
  opts: ConvertOptions = {},
): Promise<{ from: CheckpointFormat; to: 'safetensors' | 'hf'; tensors: number; config?: ClipConfig | undefined }> {
  const ck = await readCheckpoint(inPath);
  let tensors = ck.tensors;
  if (opts.dtype) {
    const to = opts.dtype;
    tensors = new Map([...tensors].map(([k, t]) => [k, ['F32', 'F16', 'BF16', 'F64'].includes(t.dtype) ? castFloat(t, to) : t]));
  }
  const to = opts.format ?? 'safetensors';
  if (to === 'hf') {
    if (!ck.config) throw new Error(`convert ${inPath}: not a CLIP checkpoint, so there is no HF layout for it`);
    await writeHFDir(outPath, tensors, ck.config);
  } else {
    const metadata = { ...ck.metadata };
    delete metadata[CONFIG_METADATA_KEY];
    await writeCheckpoint(outPath, tensors, { config: ck.config, metadata });
  }
  return { from: ck.format, to, tensors: tensors.size, config: ck.config };
}
