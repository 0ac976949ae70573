// CLIP architectures as data: the named configurations of the original and open_clip releases,
// and the small ones for training from scratch.
export type ActivationName = 'quick_gelu' | 'gelu';

export interface VitConfig {
  kind: 'vit';
  /** Input height (and width, unless imageWidth says otherwise). */
  imageSize: number;
  imageWidth?: number;
  patchSize: number;
  width: number;
  layers: number;
  heads: number;
  mlpDim: number;
}
export interface ResNetConfig {
  kind: 'resnet';
  imageSize: number;
  layers: [number, number, number, number];
  width: number;
  heads: number;
}
export interface TextConfig {
  contextLength: number;
  vocabSize: number;
  width: number;
  heads: number;
  layers: number;
  mlpDim: number;
}
export interface CLIPConfig {
  embedDim: number;
  vision: VitConfig | ResNetConfig;
  text: TextConfig;
  /** QuickGELU for OpenAI, MetaCLIP and DFN weights; GELU for the LAION open_clip models. */
  activation: ActivationName;
  /** Image normalisation the weights were trained with. */
  mean?: [number, number, number];
  std?: [number, number, number];
}

export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

const text = (width: number, heads: number, layers = 12): TextConfig => ({
  contextLength: 77, vocabSize: 49408, width, heads, layers, mlpDim: 4 * width,
});
const vit = (imageSize: number, patchSize: number, width: number, layers: number, heads = width / 64, mlpDim = 4 * width): VitConfig => ({
  kind: 'vit', imageSize, patchSize, width, layers, heads, mlpDim,
});
const rn = (imageSize: number, layers: [number, number, number, number], width: number): ResNetConfig => ({
  kind: 'resnet', imageSize, layers, width, heads: (width * 32) / 64,
});

export const CONFIGS: Record<string, CLIPConfig> = {
  RN50: { embedDim: 1024, vision: rn(224, [3, 4, 6, 3], 64), text: text(512, 8), activation: 'quick_gelu' },
  RN101: { embedDim: 512, vision: rn(224, [3, 4, 23, 3], 64), text: text(512, 8), activation: 'quick_gelu' },
  RN50x4: { embedDim: 640, vision: rn(288, [4, 6, 10, 6], 80), text: text(640, 10), activation: 'quick_gelu' },
  RN50x16: { embedDim: 768, vision: rn(384, [6, 8, 18, 8], 96), text: text(768, 12), activation: 'quick_gelu' },
  RN50x64: { embedDim: 1024, vision: rn(448, [3, 15, 36, 10], 128), text: text(1024, 16), activation: 'quick_gelu' },
  'ViT-B/32': { embedDim: 512, vision: vit(224, 32, 768, 12), text: text(512, 8), activation: 'quick_gelu' },
  'ViT-B/16': { embedDim: 512, vision: vit(224, 16, 768, 12), text: text(512, 8), activation: 'quick_gelu' },
  'ViT-L/14': { embedDim: 768, vision: vit(224, 14, 1024, 24), text: text(768, 12), activation: 'quick_gelu' },
  'ViT-L/14@336px': { embedDim: 768, vision: vit(336, 14, 1024, 24), text: text(768, 12), activation: 'quick_gelu' },
  // open_clip (LAION) families: exact GELU, head widths 80 / 88 / 104.
  'ViT-H/14': { embedDim: 1024, vision: vit(224, 14, 1280, 32, 16, 5120), text: text(1024, 16, 24), activation: 'gelu' },
  'ViT-g/14': { embedDim: 1024, vision: vit(224, 14, 1408, 40, 16, 6144), text: text(1024, 16, 24), activation: 'gelu' },
  'ViT-bigG/14': { embedDim: 1280, vision: vit(224, 14, 1664, 48, 16, 8192), text: text(1280, 20, 32), activation: 'gelu' },
  // Small models for training from scratch on small data (see README for parameter counts).
  'tiny-vit': { embedDim: 64, vision: vit(32, 4, 96, 3, 2), text: { contextLength: 32, vocabSize: 1024, width: 96, heads: 2, layers: 3, mlpDim: 384 }, activation: 'quick_gelu' },
  'small-vit': { embedDim: 128, vision: vit(64, 8, 192, 6, 3), text: { contextLength: 32, vocabSize: 4096, width: 192, heads: 3, layers: 6, mlpDim: 768 }, activation: 'quick_gelu' },
  'tiny-rn': { embedDim: 64, vision: rn(64, [1, 1, 1, 1], 16), text: { contextLength: 32, vocabSize: 1024, width: 96, heads: 2, layers: 3, mlpDim: 384 }, activation: 'quick_gelu' },
  'small-rn': { embedDim: 128, vision: rn(64, [2, 2, 2, 2], 32), text: { contextLength: 32, vocabSize: 4096, width: 192, heads: 3, layers: 6, mlpDim: 768 }, activation: 'quick_gelu' },
};

/** Accepts 'ViT-B/32', 'ViT-B-32' (open_clip spelling) or 'vit-b/32'. */
export function resolveConfig(name: string): CLIPConfig {
  const norm = (s: string) => s.toLowerCase().replace(/[-/]/g, '');
  const key = Object.keys(CONFIGS).find((k) => norm(k) === norm(name));
  if (!key) throw new Error(`unknown model configuration "${name}"; known: ${Object.keys(CONFIGS).join(', ')}`);
  return structuredClone(CONFIGS[key]);
}
