// Loading and saving CLIP weights under the original state-dict names, from any checkpoint format
// lib/io reads (safetensors with original or open_clip names, OpenAI .pt archives, HF directories).
import { readCheckpoint, writeCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { CONFIG_METADATA_KEY, type ClipConfig } from '../io/config.js';
import { toFloat32, fromFloat32, fromInt32, type RawTensor } from '../io/raw.js';
import { Random } from '../nn/random.js';
import * as ops from '../ops/index.js';
import type { Device } from '../tensor.js';
import { CLIP, resolveDevice } from './clip.js';
import { CONFIGS, type ActivationName, type CLIPConfig } from './config.js';
import { resizePositionalEmbedding } from './posembed.js';

export interface LoadOptions {
  device?: Device | 'auto';
  /** Resize a ViT's positional grid to this resolution (bicubic), e.g. 336, or [height, width]. */
  imageSize?: number | [number, number];
  /** The MLP activation, when the checkpoint does not say (an OpenAI .pt or HF config does). */
  activation?: ActivationName;
}

// Buffers the original model keeps beside its weights that carry nothing to load.
const IGNORED = /(^|\.)num_batches_tracked$/;

/** Where the checkpoint itself states its activation (so a contradicting option is refused). */
function declaredActivation(ck: Checkpoint): { act: ActivationName; why: string } | null {
  if (ck.format === 'openai-pt') return { act: 'quick_gelu', why: 'it is an original OpenAI checkpoint, trained with QuickGELU' };
  if (ck.format === 'hf' && ck.config) return { act: ck.config.activation, why: `its config.json says hidden_act = ${ck.config.activation}` };
  if (ck.metadata[CONFIG_METADATA_KEY] && ck.config) return { act: ck.config.activation, why: `its tsclip.config metadata says ${ck.config.activation}` };
  return null;
}

/** The io config plus what only the weights tell (MLP widths), with head counts of named releases. */
function toModelConfig(c: ClipConfig, tensors: Map<string, RawTensor>, activation: ActivationName): CLIPConfig {
  const mlp = (key: string, width: number) => tensors.get(key)?.shape[0] ?? 4 * width;
  const v = c.vision;
  const vision = v.kind === 'vit'
    ? { ...v, mlpDim: mlp('visual.transformer.resblocks.0.mlp.c_fc.weight', v.width) }
    : { ...v };
  const cfg: CLIPConfig = {
    embedDim: c.embedDim,
    vision,
    text: { ...c.text, mlpDim: mlp('transformer.resblocks.0.mlp.c_fc.weight', c.text.width) },
    activation,
  };
  // Head counts are not in the weights: the open_clip large models use 80-104 channels per head.
  for (const named of Object.values(CONFIGS)) {
    const nv = named.vision, cv = cfg.vision;
    if (nv.kind === 'vit' && cv.kind === 'vit' && nv.width === cv.width && nv.layers === cv.layers && nv.patchSize === cv.patchSize && named.text.width === cfg.text.width) {
      cv.heads = nv.heads;
      cfg.text.heads = named.text.heads;
    }
  }
  return cfg;
}

/** Copies checkpoint tensors into the model; every key must match by name and shape. */
export function loadStateDict(model: CLIP, tensors: Map<string, RawTensor>, where = 'checkpoint'): void {
  const state = model.stateDict();
  const missing = [...state.keys()].filter((k) => !tensors.has(k) && !IGNORED.test(k));
  const unexpected = [...tensors.keys()].filter((k) => !state.has(k) && !IGNORED.test(k));
  if (missing.length || unexpected.length) {
    const list = (xs: string[]) => xs.slice(0, 8).join(', ') + (xs.length > 8 ? `, ... (${xs.length} in all)` : '');
    throw new Error(`${where}: the weights do not fit the model${missing.length ? `; missing keys: ${list(missing)}` : ''}${unexpected.length ? `; unexpected keys: ${list(unexpected)}` : ''}`);
  }
  for (const [name, t] of state) {
    const raw = tensors.get(name);
    if (!raw) continue;
    const shapeOk = raw.shape.length === t.ndim ? raw.shape.every((s, i) => s === t.shape[i]) : raw.shape.reduce((a, b) => a * b, 1) === t.size && t.ndim === 0;
    if (!shapeOk) throw new Error(`${where}: "${name}" has shape [${raw.shape.join(',')}], the model expects [${t.shape.join(',')}]`);
    if (t.dtype === 'int32') {
      ops.fillFrom(t, Int32Array.from(toFloat32(raw), (x) => Math.round(x)));
    } else {
      ops.fillFrom(t, toFloat32(raw));
    }
  }
}

/** Loads a CLIP checkpoint (a file or an HF directory) with the numbers the original code gives. */
export async function loadCLIP(pathOrDir: string, opts: LoadOptions = {}): Promise<CLIP> {
  const ck = await readCheckpoint(pathOrDir);
  if (!ck.config) throw new Error(`${pathOrDir}: the tensors are not a CLIP model (no visual.* / transformer.* weights found)`);
  const declared = declaredActivation(ck);
  if (declared && opts.activation && opts.activation !== declared.act) {
    throw new Error(`${pathOrDir}: refusing to run this checkpoint with ${opts.activation} because ${declared.why}; a different activation would silently give worse embeddings`);
  }
  let activation = declared?.act ?? opts.activation;
  if (!activation) {
    // Nothing says: the OpenAI-shaped architectures default to QuickGELU, the LAION-only ones to GELU.
    const cfg0 = toModelConfig(ck.config, ck.tensors, 'quick_gelu');
    const named = Object.values(CONFIGS).find((n) => JSON.stringify(n.vision) === JSON.stringify(cfg0.vision));
    activation = named?.activation ?? 'quick_gelu';
  }
  const cfg = toModelConfig(ck.config, ck.tensors, activation);
  let tensors = ck.tensors;
  const [oh, ow] = typeof opts.imageSize === 'number' ? [opts.imageSize, opts.imageSize] : opts.imageSize ?? [0, 0];
  if (opts.imageSize && cfg.vision.kind === 'vit' && (oh !== cfg.vision.imageSize || ow !== cfg.vision.imageSize)) {
    const v = cfg.vision;
    if (oh % v.patchSize || ow % v.patchSize) throw new Error(`loadCLIP: imageSize ${oh}x${ow} is not a multiple of the patch size ${v.patchSize}`);
    const from = Math.floor(v.imageSize / v.patchSize);
    const to: [number, number] = [oh / v.patchSize, ow / v.patchSize];
    const pos = tensors.get('visual.positional_embedding')!;
    tensors = new Map(tensors);
    tensors.set('visual.positional_embedding', fromFloat32(resizePositionalEmbedding(toFloat32(pos), v.width, [from, from], to), [1 + to[0] * to[1], v.width]));
    // A non-square grid is described by its height and width; square ones keep the one number.
    v.imageSize = oh;
    if (oh !== ow) v.imageWidth = ow;
  } else if (opts.imageSize && cfg.vision.kind === 'resnet' && (oh !== cfg.vision.imageSize || ow !== cfg.vision.imageSize)) {
    throw new Error(`loadCLIP: resizing is supported for ViT models; this ResNet was trained at ${cfg.vision.imageSize}`);
  }
  const device = resolveDevice(opts.device);
  const model = new CLIP(cfg, { rng: new Random(0), device, skipInit: true });
  try {
    loadStateDict(model, tensors, pathOrDir);
  } catch (e) {
    model.dispose();
    throw e;
  }
  model.eval();
  return model;
}

/** Saves as safetensors with original key names and the config in the metadata. */
export async function saveCLIP(model: CLIP, file: string): Promise<void> {
  const tensors = new Map<string, RawTensor>();
  for (const [name, t] of model.stateDict()) {
    const values = t.toArraySync();
    tensors.set(name, values instanceof Int32Array ? fromInt32(values, [...t.shape]) : fromFloat32(values as Float32Array, [...t.shape]));
  }
  const { mlpDim: _v, ...vision } = model.config.vision as CLIPConfig['vision'] & { mlpDim?: number };
  const { mlpDim: _t, ...text } = model.config.text;
  const config: ClipConfig = { embedDim: model.config.embedDim, vision: vision as ClipConfig['vision'], text, activation: model.config.activation };
  await writeCheckpoint(file, tensors, { config });
}

