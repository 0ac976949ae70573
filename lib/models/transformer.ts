// The pre-norm residual attention block and the stack of them, shared by the ViT and the text
// encoder: x + attn(ln_1(x)), then x + mlp(ln_2(x)), with the MLP's activation from the config.
import { Tensor } from '../tensor.js';
import { Module, ModuleList } from '../nn/module.js';
import { LayerNorm, Linear, normalInit, uniform, type InitContext } from '../nn/layers.js';
import * as ops from '../ops/index.js';
import { multiHeadAttention } from '../ops/attention.js';
import { checkpoint } from '../recompute.js';
import { ModifiedResNet } from './resnet.js';
import type { ActivationName } from './config.js';

class MultiheadAttention extends Module {
  readonly inProjWeight: Tensor;
  readonly inProjBias: Tensor;
  readonly outProj: Linear;
  constructor(ctx: InitContext, readonly width: number, readonly heads: number) {
    super();
    // torch.nn.MultiheadAttention: xavier-uniform packed in_proj, zero biases.
    const bound = Math.sqrt(6 / (width + 3 * width));
    this.inProjWeight = this.param('in_proj_weight', uniform(ctx, [3 * width, width], bound));
    this.inProjBias = this.param('in_proj_bias', Tensor.zeros([3 * width], { device: ctx.device }));
    this.outProj = this.child('out_proj', new Linear(ctx, width, width));
    ops.fillZero(this.outProj.bias!);
  }
  forward(x: Tensor, causal: boolean): Tensor {
    return multiHeadAttention(x, this.inProjWeight, this.inProjBias, this.outProj.weight, this.outProj.bias, this.heads, { causal });
  }
}

class Mlp extends Module {
  readonly cFc: Linear;
  readonly cProj: Linear;
  constructor(ctx: InitContext, width: number, hidden: number, readonly act: ActivationName) {
    super();
    this.cFc = this.child('c_fc', new Linear(ctx, width, hidden));
    this.cProj = this.child('c_proj', new Linear(ctx, hidden, width));
  }
  forward(x: Tensor): Tensor {
    const a = ops.linearAct(x, this.cFc.weight, this.cFc.bias, this.act);
    const y = this.cProj.forward(a);
    a.dispose();
    return y;
  }
}

export class ResidualAttentionBlock extends Module {
  readonly attn: MultiheadAttention;
  readonly ln1: LayerNorm;
  readonly mlp: Mlp;
  readonly ln2: LayerNorm;
  constructor(ctx: InitContext, width: number, heads: number, mlpDim: number, act: ActivationName) {
    super();
    this.attn = this.child('attn', new MultiheadAttention(ctx, width, heads));
    this.ln1 = this.child('ln_1', new LayerNorm(ctx, width));
    this.mlp = this.child('mlp', new Mlp(ctx, width, mlpDim, act));
    this.ln2 = this.child('ln_2', new LayerNorm(ctx, width));
  }
  forward(x: Tensor, causal: boolean): Tensor {
    const n1 = this.ln1.forward(x);
    const a = this.attn.forward(n1, causal);
    n1.dispose();
    // x1 = x + a and its norm in one pass over the rows.
    const { sum: x1, normed: n2 } = ops.addLayerNorm(x, a, this.ln2.weight, this.ln2.bias, this.ln2.eps);
    a.dispose();
    const m = this.mlp.forward(n2);
    n2.dispose();
    const x2 = ops.add(x1, m);
    x1.dispose();
    m.dispose();
    return x2;
  }
}

export class Transformer extends Module {
  private readonly blocks: ModuleList<ResidualAttentionBlock>;
  /**
   * Recompute each block's activations in the backward pass instead of keeping them (training
   * only: without grad it changes nothing). Same results, less memory, one more block forward each.
   */
  gradCheckpointing = false;
  constructor(ctx: InitContext, readonly width: number, readonly layers: number, heads: number, mlpDim: number, act: ActivationName) {
    super();
    this.blocks = this.child('resblocks', new ModuleList<ResidualAttentionBlock>());
    for (let i = 0; i < layers; i++) this.blocks.push(new ResidualAttentionBlock(ctx, width, heads, mlpDim, act));
  }
  get resblocks(): readonly ResidualAttentionBlock[] {
    return this.blocks.items;
  }
  /** x [B, S, width] */
  forward(x: Tensor, causal = false): Tensor {
    let h = x;
    for (const b of this.resblocks) {
      const next = this.gradCheckpointing ? checkpoint((y) => b.forward(y, causal), h) : b.forward(h, causal);
      if (h !== x) h.dispose();
      h = next;
    }
    return h;
  }

  /** CLIP's initialisation of the blocks (std depends on width and depth). */
  initClip(ctx: InitContext): void {
    const { width, layers } = this;
    const projStd = width ** -0.5 * (2 * layers) ** -0.5;
    const attnStd = width ** -0.5;
    const fcStd = (2 * width) ** -0.5;
    for (const b of this.resblocks) {
      normalInit(ctx, b.attn.inProjWeight, attnStd);
      normalInit(ctx, b.attn.outProj.weight, projStd);
      normalInit(ctx, b.mlp.cFc.weight, fcStd);
      normalInit(ctx, b.mlp.cProj.weight, projStd);
    }
  }
}

/**
 * Turns gradient checkpointing of the transformer blocks on or off in every Transformer of a
 * model (the ViT and the text tower of a CLIP). Returns how many blocks it covers and what it
 * does not cover: a ModifiedResNet image tower keeps all its activations (its blocks are not
 * checkpointed; recomputing one in training mode needs its BatchNorm statistics preserved, see
 * checkpointWith's `module` option).
 */
export function setGradCheckpointing(model: Module, on = true): { blocks: number; notCovered: string[] } {
  let blocks = 0;
  const notCovered: string[] = [];
  for (const m of model.modules()) {
    if (m instanceof Transformer) {
      m.gradCheckpointing = on;
      blocks += m.resblocks.length;
    } else if (m instanceof ModifiedResNet) {
      notCovered.push('the ModifiedResNet image tower');
    }
  }
  if (on && blocks === 0) throw new Error('setGradCheckpointing: the model has no transformer blocks to checkpoint');
  return { blocks, notCovered };
}
