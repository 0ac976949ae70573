// The CLIP Vision Transformer: patch conv (no bias), class token, positional embedding, ln_pre,
// pre-norm blocks, ln_post on the class token, projection.
import { Tensor } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Conv2d, LayerNorm, randn, type InitContext } from '../nn/layers.js';
import * as ops from '../ops/index.js';
import { Transformer } from './transformer.js';
import type { ActivationName, VitConfig } from './config.js';

export class VisionTransformer extends Module {
  readonly conv1: Conv2d;
  readonly classEmbedding: Tensor;
  readonly positionalEmbedding: Tensor;
  readonly lnPre: LayerNorm;
  readonly transformer: Transformer;
  readonly lnPost: LayerNorm;
  readonly proj: Tensor;

  constructor(ctx: InitContext, readonly config: VitConfig, outputDim: number, act: ActivationName) {
    super();
    const { width, patchSize, imageSize, layers, heads, mlpDim } = config;
    const gh = Math.floor(imageSize / patchSize), gw = Math.floor((config.imageWidth ?? imageSize) / patchSize);
    const scale = width ** -0.5;
    this.conv1 = this.child('conv1', new Conv2d(ctx, 3, width, patchSize, patchSize, 0));
    this.classEmbedding = this.param('class_embedding', randn(ctx, [width], scale));
    this.positionalEmbedding = this.param('positional_embedding', randn(ctx, [gh * gw + 1, width], scale));
    this.lnPre = this.child('ln_pre', new LayerNorm(ctx, width));
    this.transformer = this.child('transformer', new Transformer(ctx, width, layers, heads, mlpDim, act));
    this.lnPost = this.child('ln_post', new LayerNorm(ctx, width));
    this.proj = this.param('proj', randn(ctx, [width, outputDim], scale));
  }

  /** pixels [B,3,H,W] (H and W multiples of the patch size, H/p * W/p = the positional grid) -> [B, outputDim] */
  forward(pixels: Tensor): Tensor {
    const pooled = this.pooled(pixels);
    const out = ops.matmul(pooled, this.proj);
    pooled.dispose();
    return out;
  }

  /**
   * conv1 (kernel = stride = patch, no padding, no bias) as what it is: each patch's pixels
   * [3*p*p] times the weight [width, 3*p*p], with the patches in token order. The product is a
   * linear layer (a packed weight at inference) and lands in [B, tokens, width] directly.
   */
  private embedPatches(pixels: Tensor): Tensor {
    const { width, patchSize: p } = this.config;
    const [B, C, H, W] = pixels.shape;
    const gh = H / p, gw = W / p;
    const grid = ops.reshape(pixels, [B, C, gh, p, gw, p]);
    const order = ops.permute(grid, [0, 2, 4, 1, 3, 5]); // [B, gh, gw, C, p, p]
    const rows = ops.contiguous(order);
    const flat = ops.reshape(rows, [B, gh * gw, C * p * p]);
    const w = ops.reshape(this.conv1.weight, [width, C * p * p]);
    const out = ops.linear(flat, w);
    for (const t of [grid, order, rows, flat, w]) t.dispose();
    return out;
  }

  /** The image representation before the projection: the class token after ln_post, [B, width]. */
  pooled(pixels: Tensor): Tensor {
    const { width, patchSize } = this.config;
    if (pixels.ndim !== 4 || pixels.shape[1] !== 3) throw new Error(`encodeImage: expected pixels [B,3,H,W], got ${pixels.describe()}`);
    const [B, , H, W] = pixels.shape;
    const tokens = (H / patchSize) * (W / patchSize);
    if (H % patchSize || W % patchSize || tokens + 1 !== this.positionalEmbedding.shape[0]) {
      throw new Error(`encodeImage: a ${H}x${W} image gives ${Number.isInteger(tokens) ? tokens : 'a non-integer number of'} patches of ${patchSize}, but the positional embedding has ${this.positionalEmbedding.shape[0] - 1} (image size ${this.config.imageSize}x${this.config.imageWidth ?? this.config.imageSize}; load with { imageSize: [h, w] } to resize the grid)`);
    }
    const patches = this.embedPatches(pixels); // [B, tokens, width]
    const cls = ops.expand(ops.reshape(this.classEmbedding, [1, 1, width]), [B, 1, width]);
    const x0 = ops.concat([cls, patches], 1);
    const x1 = ops.add(x0, this.positionalEmbedding);
    const x2 = this.lnPre.forward(x1);
    for (const t of [patches, cls, x0, x1]) t.dispose();
    const x3 = this.transformer.forward(x2, false);
    x2.dispose();
    const first = ops.select(x3, 1, 0); // [B, width]
    const pooled = this.lnPost.forward(first);
    for (const t of [x3, first]) t.dispose();
    return pooled;
  }
}
