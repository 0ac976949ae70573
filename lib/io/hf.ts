// Hugging Face CLIPModel checkpoints (config.json + model.safetensors) and their mapping to the
// original OpenAI names. Two differences beyond renaming: HF splits the attention input projection
// into q/k/v (the original stacks them as in_proj_weight = [q; k; v]) and stores the two output
// projections as Linear weights [out, in], where the original keeps matrices [in, out].
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { checkConfigAgainstWeights, inferConfig, parseActivation, type Activation, type ClipConfig } from './config.js';
import { writeFileAtomic } from './fsutil.js';
import { concatRows, splitRows, transpose2d, type RawTensor } from './raw.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';
import { readTorchArchive } from './torch.js';

/** HF name, original name, and whether the matrix is stored transposed. */
const FIXED: readonly [string, string, boolean][] = [
  ['text_model.embeddings.token_embedding.weight', 'token_embedding.weight', false],
  ['text_model.embeddings.position_embedding.weight', 'positional_embedding', false],
  ['text_model.final_layer_norm.weight', 'ln_final.weight', false],
  ['text_model.final_layer_norm.bias', 'ln_final.bias', false],
  ['text_projection.weight', 'text_projection', true],
  ['vision_model.embeddings.class_embedding', 'visual.class_embedding', false],
  ['vision_model.embeddings.patch_embedding.weight', 'visual.conv1.weight', false],
  ['vision_model.embeddings.position_embedding.weight', 'visual.positional_embedding', false],
  ['vision_model.pre_layrnorm.weight', 'visual.ln_pre.weight', false],
  ['vision_model.pre_layrnorm.bias', 'visual.ln_pre.bias', false],
  ['vision_model.post_layernorm.weight', 'visual.ln_post.weight', false],
  ['vision_model.post_layernorm.bias', 'visual.ln_post.bias', false],
  ['visual_projection.weight', 'visual.proj', true],
  ['logit_scale', 'logit_scale', false],
];

/** Per-layer suffixes: HF, original. */
const LAYER: readonly [string, string][] = [
  ['self_attn.out_proj.weight', 'attn.out_proj.weight'],
  ['self_attn.out_proj.bias', 'attn.out_proj.bias'],
  ['layer_norm1.weight', 'ln_1.weight'],
  ['layer_norm1.bias', 'ln_1.bias'],
  ['layer_norm2.weight', 'ln_2.weight'],
  ['layer_norm2.bias', 'ln_2.bias'],
  ['mlp.fc1.weight', 'mlp.c_fc.weight'],
  ['mlp.fc1.bias', 'mlp.c_fc.bias'],
  ['mlp.fc2.weight', 'mlp.c_proj.weight'],
  ['mlp.fc2.bias', 'mlp.c_proj.bias'],
];

/** HF tower prefix, original tower prefix. */
const TOWERS: readonly [string, string][] = [
  ['text_model.encoder.layers.', 'transformer.resblocks.'],
  ['vision_model.encoder.layers.', 'visual.transformer.resblocks.'],
];

// Index buffers that HF once saved with the weights; they are recomputed, never learned.
const HF_IGNORED = /^(text_model|vision_model)\.embeddings\.position_ids$/;

const fixedFromHF = new Map(FIXED.map(([h, o, t]) => [h, { name: o, transpose: t }]));
const fixedToHF = new Map(FIXED.map(([h, o, t]) => [o, { name: h, transpose: t }]));
const layerFromHF = new Map(LAYER);
const layerToHF = new Map(LAYER.map(([h, o]) => [o, h]));

/** True when the names are HF CLIPModel names. */
export function looksLikeHF(keys: Iterable<string>): boolean {
  for (const k of keys) if (k.startsWith('text_model.') || k.startsWith('vision_model.')) return true;
  return false;
}

/** Renames HF CLIPModel tensors to the original names, stacking q/k/v and transposing projections. */
export function hfToOriginal(tensors: Map<string, RawTensor>, where = 'HF checkpoint'): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  const qkv = new Map<string, Partial<Record<'q' | 'k' | 'v', RawTensor>>>();
  for (const [key, t] of tensors) {
    if (HF_IGNORED.test(key)) continue;
    const fixed = fixedFromHF.get(key);
    if (fixed) {
      out.set(fixed.name, fixed.transpose ? transpose2d(t, `${where}: "${key}"`) : t);
      continue;
    }
    const tower = TOWERS.find(([h]) => key.startsWith(h));
    const m = tower && /^(\d+)\.(.+)$/.exec(key.slice(tower[0].length));
    if (!tower || !m) throw new Error(`${where}: tensor "${key}" is not part of a CLIP model`);
    const base = `${tower[1]}${m[1]}.`;
    const proj = /^self_attn\.([qkv])_proj\.(weight|bias)$/.exec(m[2]);
    if (proj) {
      const target = `${base}attn.in_proj_${proj[2]}`;
      const group = qkv.get(target) ?? {};
      group[proj[1] as 'q' | 'k' | 'v'] = t;
      qkv.set(target, group);
      continue;
    }
    const suffix = layerFromHF.get(m[2]);
    if (!suffix) throw new Error(`${where}: tensor "${key}" is not part of a CLIP layer`);
    out.set(base + suffix, t);
  }
  for (const [target, g] of qkv) {
    const missing = (['q', 'k', 'v'] as const).filter((p) => !g[p]);
    if (missing.length) throw new Error(`${where}: ${target} needs q, k and v projections, missing ${missing.join(', ')}`);
    out.set(target, concatRows([g.q!, g.k!, g.v!], `${where}: ${target}`));
  }
  return out;
}

/** Renames original tensors to HF CLIPModel names (the inverse of hfToOriginal). */
export function originalToHF(tensors: Map<string, RawTensor>, where = 'checkpoint'): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const [key, t] of tensors) {
    const fixed = fixedToHF.get(key);
    if (fixed) {
      out.set(fixed.name, fixed.transpose ? transpose2d(t, `${where}: "${key}"`) : t);
      continue;
    }
    const tower = TOWERS.find(([, o]) => key.startsWith(o));
    const m = tower && /^(\d+)\.(.+)$/.exec(key.slice(tower[1].length));
    if (!tower || !m) {
      const hint = key.startsWith('visual.') ? ' (HF CLIPModel has only ViT image towers)' : '';
      throw new Error(`${where}: tensor "${key}" has no HF CLIPModel name${hint}`);
    }
    const base = `${tower[0]}${m[1]}.`;
    const inProj = /^attn\.in_proj_(weight|bias)$/.exec(m[2]);
    if (inProj) {
      const [q, k, v] = splitRows(t, 3, `${where}: "${key}"`);
      out.set(`${base}self_attn.q_proj.${inProj[1]}`, q);
      out.set(`${base}self_attn.k_proj.${inProj[1]}`, k);
      out.set(`${base}self_attn.v_proj.${inProj[1]}`, v);
      continue;
    }
    const suffix = layerToHF.get(m[2]);
    if (!suffix) throw new Error(`${where}: tensor "${key}" has no HF CLIPModel name`);
    out.set(base + suffix, t);
  }
  return out;
}

type Json = Record<string, unknown>;

function sub(o: Json, key: string, where: string): Json {
  const v = o[key] ?? {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: "${key}" must be an object`);
  return v as Json;
}

/**
 * The config of an HF checkpoint: shapes come from the weights (original names), head counts and
 * the activation from config.json, and every size config.json states must agree with the weights.
 */
export function configFromHF(json: unknown, tensors: Map<string, RawTensor>, where = 'config.json'): ClipConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${where}: expected a JSON object`);
  const root = json as Json;
  const text = sub(root, 'text_config', where);
  const vision = sub(root, 'vision_config', where);
  const acts = [text.hidden_act ?? 'quick_gelu', vision.hidden_act ?? 'quick_gelu'];
  const activation: Activation = parseActivation(acts[0], `${where}: text_config.hidden_act`);
  if (parseActivation(acts[1], `${where}: vision_config.hidden_act`) !== activation) {
    throw new Error(`${where}: text hidden_act "${acts[0]}" differs from vision hidden_act "${acts[1]}"; one activation is supported`);
  }
  for (const [name, c] of [['text_config', text], ['vision_config', vision]] as const) {
    if (c.layer_norm_eps !== undefined && c.layer_norm_eps !== 1e-5) {
      throw new Error(`${where}: ${name}.layer_norm_eps is ${String(c.layer_norm_eps)}, only 1e-5 (the original CLIP value) is supported`);
    }
  }
  const inferred = inferConfig(tensors, activation);
  if (inferred.vision.kind !== 'vit') throw new Error(`${where}: HF CLIPModel weights must have a ViT image tower`);
  const heads = (c: Json, fallback: number, name: string) => {
    const h = c.num_attention_heads;
    if (h === undefined) return fallback;
    if (!Number.isSafeInteger(h) || (h as number) < 1) throw new Error(`${where}: ${name}.num_attention_heads must be a positive integer, found ${JSON.stringify(h)}`);
    return h as number;
  };
  const declared: ClipConfig = {
    ...inferred,
    vision: { ...inferred.vision, heads: heads(vision, inferred.vision.heads, 'vision_config') },
    text: { ...inferred.text, heads: heads(text, inferred.text.heads, 'text_config') },
  };
  // Sizes config.json states, checked against the weights.
  const stated: [string, unknown, number][] = [
    ['projection_dim', root.projection_dim, inferred.embedDim],
    ['text_config.hidden_size', text.hidden_size, inferred.text.width],
    ['text_config.num_hidden_layers', text.num_hidden_layers, inferred.text.layers],
    ['text_config.vocab_size', text.vocab_size, inferred.text.vocabSize],
    ['text_config.max_position_embeddings', text.max_position_embeddings, inferred.text.contextLength],
    ['vision_config.hidden_size', vision.hidden_size, inferred.vision.width],
    ['vision_config.num_hidden_layers', vision.num_hidden_layers, inferred.vision.layers],
    ['vision_config.image_size', vision.image_size, inferred.vision.imageSize],
    ['vision_config.patch_size', vision.patch_size, inferred.vision.patchSize],
  ];
  for (const [field, v, w] of stated) {
    if (v !== undefined && v !== w) throw new Error(`${where}: ${field} is ${JSON.stringify(v)}, but the weights imply ${w}`);
  }
  checkConfigAgainstWeights(declared, inferred, where);
  return declared;
}

/** config.json for an HF CLIPModel with this architecture. */
export function configToHF(c: ClipConfig, mlpWidths: { text: number; vision: number }, dtype = 'float32'): Json {
  if (c.vision.kind !== 'vit') throw new Error('HF CLIPModel has only ViT image towers; a ResNet CLIP cannot be written in HF format');
  return {
    architectures: ['CLIPModel'],
    model_type: 'clip',
    dtype,
    projection_dim: c.embedDim,
    logit_scale_init_value: 2.6592,
    initializer_factor: 1.0,
    text_config: {
      model_type: 'clip_text_model',
      hidden_size: c.text.width,
      intermediate_size: mlpWidths.text,
      num_attention_heads: c.text.heads,
      num_hidden_layers: c.text.layers,
      max_position_embeddings: c.text.contextLength,
      vocab_size: c.text.vocabSize,
      hidden_act: c.activation,
      layer_norm_eps: 1e-5,
      projection_dim: c.embedDim,
      // The original tokenizer puts start/end of text at the top of the vocabulary.
      bos_token_id: c.text.vocabSize - 2,
      eos_token_id: c.text.vocabSize - 1,
      pad_token_id: 0,
    },
    vision_config: {
      model_type: 'clip_vision_model',
      hidden_size: c.vision.width,
      intermediate_size: mlpWidths.vision,
      num_attention_heads: c.vision.heads,
      num_hidden_layers: c.vision.layers,
      image_size: c.vision.imageSize,
      patch_size: c.vision.patchSize,
      num_channels: 3,
      hidden_act: c.activation,
      layer_norm_eps: 1e-5,
      projection_dim: c.embedDim,
    },
  };
}

export interface HFCheckpoint {
  /** Original names. */
  tensors: Map<string, RawTensor>;
  config: ClipConfig;
  metadata: Record<string, string>;
}

async function readHFWeights(dir: string): Promise<{ tensors: Map<string, RawTensor>; metadata: Record<string, string> }> {
  const single = path.join(dir, 'model.safetensors');
  if (existsSync(single)) return readSafetensors(single);
  const index = path.join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const parsed = JSON.parse(await fsp.readFile(index, 'utf8')) as { weight_map?: Record<string, string> };
    const map = parsed.weight_map;
    if (!map || typeof map !== 'object') throw new Error(`${index}: no "weight_map" object`);
    const tensors = new Map<string, RawTensor>();
    const metadata: Record<string, string> = {};
    for (const shard of new Set(Object.values(map))) {
      if (path.basename(shard) !== shard) throw new Error(`${index}: shard name "${shard}" must be a file in the same directory`);
      const f = await readSafetensors(path.join(dir, shard));
      Object.assign(metadata, f.metadata);
      for (const [k, t] of f.tensors) if (map[k] === shard) tensors.set(k, t);
    }
    const missing = Object.keys(map).filter((k) => !tensors.has(k));
    if (missing.length) throw new Error(`${index}: tensors listed but not found in their shards: ${missing.slice(0, 5).join(', ')}`);
    return { tensors, metadata };
  }
  const bin = path.join(dir, 'pytorch_model.bin');
  if (existsSync(bin)) return { tensors: (await readTorchArchive(bin)).tensors, metadata: {} };
  throw new Error(`${dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin`);
}

/** Reads an HF CLIPModel directory and returns original names plus the architecture. */
export async function readHFDir(dir: string): Promise<HFCheckpoint> {
  const cfgPath = path.join(dir, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(await fsp.readFile(cfgPath, 'utf8'));
  } catch (e) {
    throw new Error(`${cfgPath}: cannot read config (${(e as Error).message})`);
  }
  const { tensors, metadata } = await readHFWeights(dir);
  const original = hfToOriginal(tensors, dir);
  return { tensors: original, config: configFromHF(json, original, cfgPath), metadata };
}

function mlpWidth(tensors: Map<string, RawTensor>, key: string): number {
  const t = tensors.get(key);
  if (!t) throw new Error(`cannot write HF config: missing tensor "${key}"`);
  return t.shape[0];
}

// config.json names the weights' dtype the way torch does.
function torchDtypeName(tensors: Map<string, RawTensor>): string {
  const d = tensors.get('token_embedding.weight')?.dtype;
  return d === 'F16' ? 'float16' : d === 'BF16' ? 'bfloat16' : 'float32';
}

/** Writes config.json and model.safetensors (HF names) into `dir`, creating it if needed. */
export async function writeHFDir(dir: string, tensors: Map<string, RawTensor>, config: ClipConfig): Promise<void> {
  const hf = originalToHF(tensors, dir);
  const mlp = {
    text: mlpWidth(tensors, 'transformer.resblocks.0.mlp.c_fc.weight'),
    vision: mlpWidth(tensors, 'visual.transformer.resblocks.0.mlp.c_fc.weight'),
  };
  const json = JSON.stringify(configToHF(config, mlp, torchDtypeName(tensors)), null, 2) + '\n';
  await fsp.mkdir(dir, { recursive: true });
  // transformers refuses safetensors files whose metadata format is not "pt".
  await writeSafetensors(path.join(dir, 'model.safetensors'), hf, { format: 'pt' });
  await writeFileAtomic(path.join(dir, 'config.json'), [Buffer.from(json, 'utf8')]);
}
