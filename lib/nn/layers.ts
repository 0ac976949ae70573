// The building blocks CLIP needs, with PyTorch's default initialisation: Linear, LayerNorm,
// Conv2d (no bias, as in CLIP), BatchNorm2d.
import { Tensor, type Device } from '../tensor.js';
import { Module } from './module.js';
import { Random } from './random.js';
import * as ops from '../ops/index.js';
import { layerNorm } from '../ops/norm.js';
import { conv2d, batchNorm2d } from '../ops/conv.js';
import { fillFrom } from '../ops/inplace.js';

export interface InitContext {
  rng: Random;
  device: Device;
  /** Leave random initialisation out (the weights are about to be loaded). */
  skipInit?: boolean;
}

export function randn(ctx: InitContext, shape: number[], std: number): Tensor {
  if (ctx.skipInit) return Tensor.empty(shape, { device: ctx.device });
  return Tensor.from(ctx.rng.normalArray(shape.reduce((a, b) => a * b, 1), std), shape, { device: ctx.device });
}
export function uniform(ctx: InitContext, shape: number[], bound: number): Tensor {
  if (ctx.skipInit) return Tensor.empty(shape, { device: ctx.device });
  return Tensor.from(ctx.rng.uniformArray(shape.reduce((a, b) => a * b, 1), -bound, bound), shape, { device: ctx.device });
}
/** Re-initialises an existing parameter from N(0, std) (CLIP's own initialisation of some layers). */
export function normalInit(ctx: InitContext, t: Tensor, std: number): void {
  if (!ctx.skipInit) fillFrom(t, ctx.rng.normalArray(t.size, std));
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(ctx: InitContext, inF: number, outF: number, bias = true) {
    super();
    // kaiming_uniform(a=sqrt(5)) and the matching bias bound: both 1/sqrt(fan_in).
    const bound = 1 / Math.sqrt(inF);
    this.weight = this.param('weight', uniform(ctx, [outF, inF], bound));
    this.bias = bias ? this.param('bias', uniform(ctx, [outF], bound)) : null;
  }
  forward(x: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias);
  }
}

export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(ctx: InitContext, dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('weight', Tensor.ones([dim], { device: ctx.device }));
    this.bias = this.param('bias', Tensor.zeros([dim], { device: ctx.device }));
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class Conv2d extends Module {
  readonly weight: Tensor;
  constructor(ctx: InitContext, inC: number, outC: number, kernel: number, readonly stride = 1, readonly padding = 0) {
    super();
    const bound = 1 / Math.sqrt(inC * kernel * kernel);
    this.weight = this.param('weight', uniform(ctx, [outC, inC, kernel, kernel], bound));
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, null, { stride: this.stride, padding: this.padding });
  }
}

export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Tensor;
  constructor(ctx: InitContext, channels: number, readonly eps = 1e-5, readonly momentum = 0.1) {
    super();
    this.weight = this.param('weight', Tensor.ones([channels], { device: ctx.device }));
    this.bias = this.param('bias', Tensor.zeros([channels], { device: ctx.device }));
    this.runningMean = this.buffer('running_mean', Tensor.zeros([channels], { device: ctx.device }));
    this.runningVar = this.buffer('running_var', Tensor.ones([channels], { device: ctx.device }));
    this.numBatchesTracked = this.buffer('num_batches_tracked', Tensor.zeros([], { device: ctx.device, dtype: 'int32' }));
  }
  /** When frozen (a locked tower), it normalises with running statistics even in training mode. */
  frozen = false;
  forward(x: Tensor): Tensor {
    const training = this.training && !this.frozen;
    return batchNorm2d(x, this.weight, this.bias, this.runningMean, this.runningVar, { training, momentum: this.momentum, eps: this.eps });
  }
}

export class Embedding extends Module {
  readonly weight: Tensor;
  constructor(ctx: InitContext, count: number, dim: number, std = 1) {
    super();
    this.weight = this.param('weight', randn(ctx, [count, dim], std));
  }
}
