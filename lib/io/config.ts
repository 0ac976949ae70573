// CLIP architecture from checkpoint contents. Inference from weight names and shapes follows the
// original build_model: everything but the head counts and the activation is in the shapes, and the
// head counts follow its rule of 64 channels per head.

export type Activation = 'quick_gelu' | 'gelu';

export interface VitVisionConfig {
  kind: 'vit';
  width: number;
  layers: number;
  patchSize: number;
  imageSize: number;
  heads: number;
}

export interface ResNetVisionConfig {
  kind: 'resnet';
  /** Bottleneck blocks in each of the four stages. */
  layers: [number, number, number, number];
  /** Stem width; the attention pool works on width * 32 channels. */
  width: number;
  imageSize: number;
  heads: number;
}

export interface TextConfig {
  contextLength: number;
  vocabSize: number;
  width: number;
  heads: number;
  layers: number;
}

export interface ClipConfig {
  embedDim: number;
  vision: VitVisionConfig | ResNetVisionConfig;
  text: TextConfig;
  activation: Activation;
}

/** Safetensors metadata key holding a ClipConfig as JSON. */
export const CONFIG_METADATA_KEY = 'tsclip.config';

type Shapes = { get(key: string): { shape: number[] } | undefined; keys(): Iterable<string> };

function shapeOf(t: Shapes, key: string): number[] {
  const v = t.get(key);
  if (!v) throw new Error(`cannot infer CLIP config: missing tensor "${key}"`);
  return v.shape;
}

function dim(t: Shapes, key: string, axis: number, rank: number): number {
  const s = shapeOf(t, key);
  if (s.length !== rank) throw new Error(`cannot infer CLIP config: "${key}" has shape [${s.join(', ')}], expected ${rank} dims`);
  return s[axis < 0 ? s.length + axis : axis];
}

/** Distinct values of the first capture group over all keys. */
function countDistinct(keys: string[], re: RegExp): number {
  const seen = new Set<string>();
  for (const k of keys) {
    const m = re.exec(k);
    if (m) seen.add(m[1]);
  }
  return seen.size;
}

function gridOf(t: Shapes, key: string): number {
  const rows = dim(t, key, 0, 2);
  const grid = Math.round(Math.sqrt(rows - 1));
  if (grid * grid + 1 !== rows) {
    throw new Error(`cannot infer CLIP config: "${key}" has ${rows} rows, expected a square grid plus one`);
  }
  return grid;
}

function headsFor(width: number, what: string): number {
  const heads = Math.floor(width / 64);
  if (heads < 1) throw new Error(`cannot infer CLIP config: ${what} width ${width} is below 64, so the head count is unknown`);
  return heads;
}

/** True when the names look like an original-layout CLIP state dict. */
export function looksLikeClip(keys: Iterable<string>): boolean {
  let text = false;
  let vision = false;
  for (const k of keys) {
    if (k === 'token_embedding.weight') text = true;
    if (k === 'visual.conv1.weight') vision = true;
  }
  return text && vision;
}

/** Infers the architecture from original (OpenAI / open_clip) names and shapes. */
export function inferConfig(tensors: Shapes, activation: Activation = 'quick_gelu'): ClipConfig {
  const keys = [...tensors.keys()];
  let vision: ClipConfig['vision'];
  if (tensors.get('visual.proj')) {
    const width = dim(tensors, 'visual.conv1.weight', 0, 4);
    const patchSize = dim(tensors, 'visual.conv1.weight', -1, 4);
    const layers = countDistinct(keys, /^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$/);
    if (layers === 0) throw new Error('cannot infer CLIP config: no visual.transformer.resblocks.N.attn.in_proj_weight tensors');
    const imageSize = patchSize * gridOf(tensors, 'visual.positional_embedding');
    vision = { kind: 'vit', width, layers, patchSize, imageSize, heads: headsFor(width, 'vision') };
  } else {
    const layers = [1, 2, 3, 4].map((b) => countDistinct(keys, new RegExp(`^visual\\.layer${b}\\.(\\d+)\\.`))) as [number, number, number, number];
    const missing = layers.findIndex((n) => n === 0);
    if (missing >= 0) throw new Error(`cannot infer CLIP config: no visual.proj (ViT) and no visual.layer${missing + 1}.* blocks (ResNet)`);
    const width = dim(tensors, 'visual.layer1.0.conv1.weight', 0, 4);
    const imageSize = gridOf(tensors, 'visual.attnpool.positional_embedding') * 32;
    vision = { kind: 'resnet', layers, width, imageSize, heads: Math.floor((width * 32) / 64) };
    if (vision.heads < 1) throw new Error(`cannot infer CLIP config: ResNet width ${width} gives no attention-pool heads`);
  }
  const textWidth = dim(tensors, 'ln_final.weight', 0, 1);
  const textLayers = countDistinct(keys, /^transformer\.resblocks\.(\d+)\./);
  if (textLayers === 0) throw new Error('cannot infer CLIP config: no transformer.resblocks.N tensors');
  return {
    embedDim: dim(tensors, 'text_projection', 1, 2),
    vision,
    text: {
      contextLength: dim(tensors, 'positional_embedding', 0, 2),
      vocabSize: dim(tensors, 'token_embedding.weight', 0, 2),
      width: textWidth,
      heads: headsFor(textWidth, 'text'),
      layers: textLayers,
    },
    activation,
  };
}

function posInt(o: Record<string, unknown>, key: string, where: string): number {
  const v = o[key];
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new Error(`${where}: "${key}" must be a positive integer, found ${JSON.stringify(v)}`);
  return v as number;
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: expected an object, found ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

export function parseActivation(v: unknown, where: string): Activation {
  if (v === 'quick_gelu' || v === 'gelu') return v;
  throw new Error(`${where}: activation ${JSON.stringify(v)} is not supported, expected "quick_gelu" or "gelu"`);
}

/** Validates a ClipConfig read from JSON. */
export function parseClipConfig(value: unknown, where = 'CLIP config'): ClipConfig {
  const o = obj(value, where);
  const v = obj(o.vision, `${where}.vision`);
  const t = obj(o.text, `${where}.text`);
  let vision: ClipConfig['vision'];
  const vw = `${where}.vision`;
  if (v.kind === 'vit') {
    vision = {
      kind: 'vit',
      width: posInt(v, 'width', vw),
      layers: posInt(v, 'layers', vw),
      patchSize: posInt(v, 'patchSize', vw),
      imageSize: posInt(v, 'imageSize', vw),
      heads: posInt(v, 'heads', vw),
    };
  } else if (v.kind === 'resnet') {
    const layers = v.layers;
    if (!Array.isArray(layers) || layers.length !== 4 || layers.some((n) => !Number.isSafeInteger(n) || n < 1)) {
      throw new Error(`${vw}: "layers" must be four positive integers, found ${JSON.stringify(layers)}`);
    }
    vision = {
      kind: 'resnet',
      layers: layers as [number, number, number, number],
      width: posInt(v, 'width', vw),
      imageSize: posInt(v, 'imageSize', vw),
      heads: posInt(v, 'heads', vw),
    };
  } else throw new Error(`${vw}: "kind" must be "vit" or "resnet", found ${JSON.stringify(v.kind)}`);
  const tw = `${where}.text`;
  return {
    embedDim: posInt(o, 'embedDim', where),
    vision,
    text: {
      contextLength: posInt(t, 'contextLength', tw),
      vocabSize: posInt(t, 'vocabSize', tw),
      width: posInt(t, 'width', tw),
      heads: posInt(t, 'heads', tw),
      layers: posInt(t, 'layers', tw),
    },
    activation: parseActivation(o.activation ?? 'quick_gelu', where),
  };
}

/** Reads the original build_model fields (embed_dim, vision_layers, ...) as written in fixtures. */
export function configFromOpenAI(value: unknown, activation: Activation = 'quick_gelu', where = 'OpenAI CLIP config'): ClipConfig {
  const o = obj(value, where);
  const visionWidth = posInt(o, 'vision_width', where);
  const imageSize = posInt(o, 'image_resolution', where);
  const vl = o.vision_layers;
  let vision: ClipConfig['vision'];
  if (Array.isArray(vl)) {
    if (vl.length !== 4 || vl.some((n) => !Number.isSafeInteger(n) || n < 1)) {
      throw new Error(`${where}: "vision_layers" must be four positive integers for a ResNet, found ${JSON.stringify(vl)}`);
    }
    vision = { kind: 'resnet', layers: vl as [number, number, number, number], width: visionWidth, imageSize, heads: Math.floor((visionWidth * 32) / 64) };
  } else {
    vision = {
      kind: 'vit',
      width: visionWidth,
      layers: posInt(o, 'vision_layers', where),
      patchSize: posInt(o, 'vision_patch_size', where),
      imageSize,
      heads: headsFor(visionWidth, 'vision'),
    };
  }
  const textWidth = posInt(o, 'transformer_width', where);
  return {
    embedDim: posInt(o, 'embed_dim', where),
    vision,
    text: {
      contextLength: posInt(o, 'context_length', where),
      vocabSize: posInt(o, 'vocab_size', where),
      width: textWidth,
      heads: o.transformer_heads === undefined ? headsFor(textWidth, 'text') : posInt(o, 'transformer_heads', where),
      layers: posInt(o, 'transformer_layers', where),
    },
    activation,
  };
}

/** The original build_model fields for a config (head counts beyond its rule are not expressible). */
export function configToOpenAI(c: ClipConfig): Record<string, unknown> {
  return {
    embed_dim: c.embedDim,
    image_resolution: c.vision.imageSize,
    vision_layers: c.vision.kind === 'vit' ? c.vision.layers : [...c.vision.layers],
    vision_width: c.vision.width,
    vision_patch_size: c.vision.kind === 'vit' ? c.vision.patchSize : null,
    context_length: c.text.contextLength,
    vocab_size: c.text.vocabSize,
    transformer_width: c.text.width,
    transformer_heads: c.text.heads,
    transformer_layers: c.text.layers,
  };
}

/**
 * The config stored in safetensors metadata: ours under "tsclip.config", or the original fields
 * under "config" (as the fixtures write them). Undefined when neither is present.
 */
export function configFromMetadata(metadata: Record<string, string>, file: string): ClipConfig | undefined {
  const parse = (key: string) => {
    try {
      return JSON.parse(metadata[key]) as unknown;
    } catch (e) {
      throw new Error(`${file}: metadata "${key}" is not valid JSON (${(e as Error).message})`);
    }
  };
  if (metadata[CONFIG_METADATA_KEY] !== undefined) return parseClipConfig(parse(CONFIG_METADATA_KEY), `${file}: metadata "${CONFIG_METADATA_KEY}"`);
  if (metadata.config !== undefined) {
    const act = metadata.activation === undefined ? 'quick_gelu' : parseActivation(metadata.activation, `${file}: metadata "activation"`);
    return configFromOpenAI(parse('config'), act, `${file}: metadata "config"`);
  }
  return undefined;
}

/**
 * Throws when a declared config disagrees with what the weights imply. Head counts and the
 * activation are not visible in the weights, so only the declared values exist for them.
 */
export function checkConfigAgainstWeights(declared: ClipConfig, inferred: ClipConfig, where: string): void {
  const pairs: [string, unknown, unknown][] = [
    ['embedDim', declared.embedDim, inferred.embedDim],
    ['vision.kind', declared.vision.kind, inferred.vision.kind],
    ['vision.width', declared.vision.width, inferred.vision.width],
    ['vision.layers', JSON.stringify(declared.vision.layers), JSON.stringify(inferred.vision.layers)],
    ['vision.imageSize', declared.vision.imageSize, inferred.vision.imageSize],
    ['text.contextLength', declared.text.contextLength, inferred.text.contextLength],
    ['text.vocabSize', declared.text.vocabSize, inferred.text.vocabSize],
    ['text.width', declared.text.width, inferred.text.width],
    ['text.layers', declared.text.layers, inferred.text.layers],
  ];
  if (declared.vision.kind === 'vit' && inferred.vision.kind === 'vit') {
    pairs.push(['vision.patchSize', declared.vision.patchSize, inferred.vision.patchSize]);
  }
  for (const [field, d, w] of pairs) {
    if (d !== w) throw new Error(`${where}: config says ${field} = ${String(d)}, but the weights imply ${String(w)}`);
  }
  const visionChannels = declared.vision.kind === 'vit' ? declared.vision.width : declared.vision.width * 32;
  if (visionChannels % declared.vision.heads) {
    throw new Error(`${where}: vision attention width ${visionChannels} is not divisible by ${declared.vision.heads} heads`);
  }
  if (declared.text.width % declared.text.heads) {
    throw new Error(`${where}: text width ${declared.text.width} is not divisible by ${declared.text.heads} heads`);
  }
}
