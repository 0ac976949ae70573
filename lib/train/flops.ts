// Model FLOPs of CLIP from its configuration: the work the model needs, not what a kernel happens to
// execute. Counted: every matmul and convolution (2 FLOPs per multiply-add) and attention's two
// matmuls (scores and the weighted sum of values). Not counted: norms, activations, softmax,
// pooling, embedding look-ups, the loss's exponentials; together they are well under 1% for CLIP.
//
// Attention over a causal mask needs only the pairs on and below the diagonal, L(L+1)/2 of L^2; the
// text tower also stops at the longest caption (see TextTransformer.forward), so its cost follows the
// caption length, not the context length. open_clip's profile counts the full 77 x 77 square: 5.96
// GFLOP for ViT-B/32's text tower where this count gives 5.89 at 77 tokens.
import type { CLIPConfig, ResNetConfig, TextConfig, VitConfig } from '../models/config.js';

export interface FlopsOptions {
  /** Positions the text tower runs (the longest caption, end-of-text included). Default: the context length. */
  textLength?: number;
}

function checkPositive(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`flops: ${what} must be a positive integer, got ${n}`);
}

/** Multiply-adds of one pre-norm block over S tokens: packed q/k/v, output projection, MLP, attention. */
function blockMacs(S: number, width: number, mlpDim: number, pairs: number): number {
  return 4 * S * width * width + 2 * S * width * mlpDim + 2 * pairs * width;
}

/** Forward FLOPs of the ViT image tower for one image. */
export function vitFlops(v: VitConfig, embedDim: number): number {
  const gh = Math.floor(v.imageSize / v.patchSize), gw = Math.floor((v.imageWidth ?? v.imageSize) / v.patchSize);
  const patches = gh * gw;
  const S = patches + 1; // the class token
  const patchEmbed = patches * 3 * v.patchSize * v.patchSize * v.width;
  return 2 * (patchEmbed + v.layers * blockMacs(S, v.width, v.mlpDim, S * S) + v.width * embedDim);
}

const convOut = (i: number, k: number, s: number, p: number) => Math.floor((i + 2 * p - k) / s) + 1;

/** Forward FLOPs of CLIP's ModifiedResNet for one image (stem, bottlenecks, attention pooling). */
export function resnetFlops(r: ResNetConfig, embedDim: number): number {
  let macs = 0;
  // a k x k convolution from cin to cout channels producing an h x h map
  const conv = (cin: number, cout: number, k: number, h: number) => (macs += h * h * cin * cout * k * k);
  const w = r.width;
  let h = convOut(r.imageSize, 3, 2, 1);
  conv(3, w / 2, 3, h);
  conv(w / 2, w / 2, 3, h);
  conv(w / 2, w, 3, h);
  h = Math.floor(h / 2); // the stem's average pool
  let inplanes = w;
  r.layers.forEach((blocks, i) => {
    const planes = w * 2 ** i;
    for (let b = 0; b < blocks; b++) {
      const stride = b === 0 && i > 0 ? 2 : 1;
      const hOut = Math.floor(h / stride); // the stride is an average pool before conv3
      conv(inplanes, planes, 1, h);
      conv(planes, planes, 3, h);
      conv(planes, planes * 4, 1, hOut);
      if (stride > 1 || inplanes !== planes * 4) conv(inplanes, planes * 4, 1, hOut);
      inplanes = planes * 4;
      h = hOut;
    }
  });
  // Attention pooling: only the mean token queries; keys and values for every position.
  const C = inplanes, T = h * h + 1;
  macs += C * C + 2 * T * C * C + 2 * T * C + C * embedDim;
  return 2 * macs;
}

/** Forward FLOPs of the causal text tower for one caption run over `length` positions. */
export function textFlops(t: TextConfig, embedDim: number, length = t.contextLength): number {
  checkPositive('text length', length);
  if (length > t.contextLength) throw new Error(`flops: text length ${length} exceeds the context length ${t.contextLength}`);
  const pairs = (length * (length + 1)) / 2;
  // The projection applies to the end-of-text position only.
  return 2 * (t.layers * blockMacs(length, t.width, t.mlpDim, pairs) + t.width * embedDim);
}

/** Forward FLOPs of the image tower for one image. */
export function imageFlops(cfg: CLIPConfig): number {
  return cfg.vision.kind === 'vit' ? vitFlops(cfg.vision, cfg.embedDim) : resnetFlops(cfg.vision, cfg.embedDim);
}

/** FLOPs of the first layer, whose input (the pixels) needs no gradient. */
function inputLayerFlops(cfg: CLIPConfig): number {
  const v = cfg.vision;
  if (v.kind === 'vit') {
    const patches = Math.floor(v.imageSize / v.patchSize) * Math.floor((v.imageWidth ?? v.imageSize) / v.patchSize);
    return 2 * patches * 3 * v.patchSize * v.patchSize * v.width;
  }
  const h = convOut(v.imageSize, 3, 2, 1);
  return 2 * h * h * 3 * (v.width / 2) * 9;
}

export interface StepFlops {
  image: number;
  text: number;
  /** The image-text logits matrix of the contrastive loss. */
  logits: number;
  total: number;
}

/** Forward FLOPs of a CLIP batch: both towers and the B x B logits. */
export function forwardFlops(cfg: CLIPConfig, batch: number, opts: FlopsOptions = {}): StepFlops {
  checkPositive('batch', batch);
  const image = batch * imageFlops(cfg);
  const text = batch * textFlops(cfg.text, cfg.embedDim, opts.textLength ?? cfg.text.contextLength);
  const logits = 2 * batch * batch * cfg.embedDim;
  return { image, text, logits, total: image + text + logits };
}

/**
 * FLOPs of one training step (forward, backward, no recomputation): each matmul's backward costs
 * twice its forward (gradients of both operands), except the first layer's, which needs only the
 * weight gradient. So about 3x the forward. The optimizer's elementwise update is not counted.
 */
export function trainStepFlops(cfg: CLIPConfig, batch: number, opts: FlopsOptions = {}): StepFlops {
  const f = forwardFlops(cfg, batch, opts);
  const image = 3 * f.image - batch * inputLayerFlops(cfg);
  const text = 3 * f.text, logits = 3 * f.logits;
  return { image, text, logits, total: image + text + logits };
}
