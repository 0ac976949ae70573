// CLIP's ModifiedResNet: a three-conv stem with average pooling, bottlenecks whose stride is an
// average pool before the last 1x1 conv (anti-aliased downsampling), and attention pooling with
// its own positional embedding in place of global average pooling.
import { Tensor } from '../tensor.js';
import { Module, ModuleList } from '../nn/module.js';
import { BatchNorm2d, Conv2d, Linear, normalInit, randn, type InitContext } from '../nn/layers.js';
import * as ops from '../ops/index.js';
import { avgPool2d } from '../ops/conv.js';
import { attention } from '../ops/attention.js';
import type { ResNetConfig } from './config.js';

function convBnRelu(conv: Conv2d, bn: BatchNorm2d, x: Tensor, relu = true): Tensor {
  const c = conv.forward(x);
  const b = bn.forward(c);
  c.dispose();
  if (!relu) return b;
  const r = ops.relu(b);
  b.dispose();
  return r;
}

class Downsample extends Module {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d;
  constructor(ctx: InitContext, inC: number, outC: number, readonly stride: number) {
    super();
    // open_clip/OpenAI name them "-1" (the pool, no parameters), "0" (conv) and "1" (bn).
    this.conv = this.child('0', new Conv2d(ctx, inC, outC, 1));
    this.bn = this.child('1', new BatchNorm2d(ctx, outC));
  }
  forward(x: Tensor): Tensor {
    const p = this.stride > 1 ? avgPool2d(x, this.stride, this.stride) : x;
    const out = convBnRelu(this.conv, this.bn, p, false);
    if (p !== x) p.dispose();
    return out;
  }
}

class Bottleneck extends Module {
  static readonly expansion = 4;
  readonly conv1: Conv2d; readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d; readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d; readonly bn3: BatchNorm2d;
  readonly downsample: Downsample | null;
  constructor(ctx: InitContext, inplanes: number, planes: number, readonly stride = 1) {
    super();
    this.conv1 = this.child('conv1', new Conv2d(ctx, inplanes, planes, 1));
    this.bn1 = this.child('bn1', new BatchNorm2d(ctx, planes));
    this.conv2 = this.child('conv2', new Conv2d(ctx, planes, planes, 3, 1, 1));
    this.bn2 = this.child('bn2', new BatchNorm2d(ctx, planes));
    this.conv3 = this.child('conv3', new Conv2d(ctx, planes, planes * 4, 1));
    this.bn3 = this.child('bn3', new BatchNorm2d(ctx, planes * 4));
    this.downsample = stride > 1 || inplanes !== planes * 4 ? this.child('downsample', new Downsample(ctx, inplanes, planes * 4, stride)) : null;
  }
  forward(x: Tensor): Tensor {
    const a = convBnRelu(this.conv1, this.bn1, x);
    const b = convBnRelu(this.conv2, this.bn2, a);
    a.dispose();
    const p = this.stride > 1 ? avgPool2d(b, this.stride, this.stride) : b;
    if (p !== b) b.dispose();
    const c = convBnRelu(this.conv3, this.bn3, p, false);
    p.dispose();
    const identity = this.downsample ? this.downsample.forward(x) : x;
    const s = ops.add(c, identity);
    c.dispose();
    if (identity !== x) identity.dispose();
    const out = ops.relu(s);
    s.dispose();
    return out;
  }
}

class AttentionPool2d extends Module {
  readonly positionalEmbedding: Tensor;
  readonly kProj: Linear; readonly qProj: Linear; readonly vProj: Linear; readonly cProj: Linear;
  constructor(ctx: InitContext, spatial: number, readonly embedDim: number, readonly heads: number, outputDim: number) {
    super();
    this.positionalEmbedding = this.param('positional_embedding', randn(ctx, [spatial * spatial + 1, embedDim], embedDim ** -0.5));
    this.kProj = this.child('k_proj', new Linear(ctx, embedDim, embedDim));
    this.qProj = this.child('q_proj', new Linear(ctx, embedDim, embedDim));
    this.vProj = this.child('v_proj', new Linear(ctx, embedDim, embedDim));
    this.cProj = this.child('c_proj', new Linear(ctx, embedDim, outputDim));
    const std = embedDim ** -0.5; // CLIP's init: c_proj.in_features ** -0.5 for all four
    for (const l of [this.qProj, this.kProj, this.vProj, this.cProj]) normalInit(ctx, l.weight, std);
  }
  /** x [B, C, H, W] -> [B, outputDim]: the mean token attends over itself and every position. */
  forward(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const HW = H * W;
    if (HW + 1 !== this.positionalEmbedding.shape[0]) {
      throw new Error(`encodeImage: the feature map is ${H}x${W} but the attention pool's positional embedding has ${this.positionalEmbedding.shape[0] - 1} positions`);
    }
    const flat = ops.reshape(x, [B, C, HW]);
    const seq = ops.transpose(flat, 1, 2); // [B, HW, C]
    const mean = ops.mean(seq, 1, true); // [B, 1, C]
    const cat = ops.concat([mean, seq], 1); // [B, HW+1, C]
    const tok = ops.add(cat, this.positionalEmbedding);
    for (const t of [flat, seq, mean, cat]) t.dispose();
    const first = ops.slice(tok, 1, 0, 1);
    const Dh = C / this.heads;
    const q = this.qProj.forward(first); // [B, 1, C]
    const k = this.kProj.forward(tok);
    const v = this.vProj.forward(tok);
    first.dispose();
    tok.dispose();
    const q4 = ops.reshape(q, [B, 1, this.heads, Dh]);
    const k4 = ops.reshape(k, [B, HW + 1, this.heads, Dh]);
    const v4 = ops.reshape(v, [B, HW + 1, this.heads, Dh]);
    const o = attention(q4, k4, v4, { causal: false, scale: Dh ** -0.5 }); // [B, 1, H, Dh]
    for (const t of [q, k, v, q4, k4, v4]) t.dispose();
    const o2 = ops.reshape(o, [B, C]);
    const out = this.cProj.forward(o2);
    o.dispose();
    o2.dispose();
    return out;
  }
}

export class ModifiedResNet extends Module {
  readonly conv1: Conv2d; readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d; readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d; readonly bn3: BatchNorm2d;
  readonly layers: ModuleList<Bottleneck>[] = [];
  readonly attnpool: AttentionPool2d;

  constructor(ctx: InitContext, readonly config: ResNetConfig, outputDim: number) {
    super();
    const { width, layers, imageSize, heads } = config;
    this.conv1 = this.child('conv1', new Conv2d(ctx, 3, width / 2, 3, 2, 1));
    this.bn1 = this.child('bn1', new BatchNorm2d(ctx, width / 2));
    this.conv2 = this.child('conv2', new Conv2d(ctx, width / 2, width / 2, 3, 1, 1));
    this.bn2 = this.child('bn2', new BatchNorm2d(ctx, width / 2));
    this.conv3 = this.child('conv3', new Conv2d(ctx, width / 2, width, 3, 1, 1));
    this.bn3 = this.child('bn3', new BatchNorm2d(ctx, width));
    let inplanes = width;
    layers.forEach((blocks, i) => {
      const planes = width * 2 ** i;
      const list = this.child(`layer${i + 1}`, new ModuleList<Bottleneck>());
      for (let b = 0; b < blocks; b++) {
        list.push(new Bottleneck(ctx, inplanes, planes, b === 0 && i > 0 ? 2 : 1));
        inplanes = planes * Bottleneck.expansion;
      }
      // CLIP zero-initialises the last BatchNorm of every block, so each starts as the identity.
      for (const blk of list.items) ops.fillZero(blk.bn3.weight);
      this.layers.push(list);
    });
    this.attnpool = this.child('attnpool', new AttentionPool2d(ctx, Math.floor(imageSize / 32), width * 32, heads, outputDim));
  }

  /** BatchNorm layers, for freezing a locked tower. */
  batchNorms(): BatchNorm2d[] {
    return this.modules().filter((m): m is BatchNorm2d => m instanceof BatchNorm2d);
  }

  forward(pixels: Tensor): Tensor {
    if (pixels.ndim !== 4 || pixels.shape[1] !== 3) throw new Error(`encodeImage: expected pixels [B,3,H,W], got ${pixels.describe()}`);
    const a = convBnRelu(this.conv1, this.bn1, pixels);
    const b = convBnRelu(this.conv2, this.bn2, a);
    a.dispose();
    const c = convBnRelu(this.conv3, this.bn3, b);
    b.dispose();
    let x = avgPool2d(c, 2, 2);
    c.dispose();
    for (const list of this.layers) {
      for (const blk of list.items) {
        const next = blk.forward(x);
        x.dispose();
        x = next;
      }
    }
    const out = this.attnpool.forward(x);
    x.dispose();
    return out;
  }
}
