// CLIP: an image encoder (ViT or ModifiedResNet), the causal text encoder and a learnable
// temperature, logit_scale = ln(1/0.07) at initialisation.
import { Tensor, tidy, type Device } from '../tensor.js';
import { Module } from '../nn/module.js';
import { Random } from '../nn/random.js';
import type { InitContext } from '../nn/layers.js';
import * as ops from '../ops/index.js';
import { l2Normalize } from '../ops/norm.js';
import { clipLoss } from '../ops/loss.js';
import { VisionTransformer } from './vit.js';
import { ModifiedResNet } from './resnet.js';
import { TextTransformer } from './text.js';
import { resolveConfig, type CLIPConfig } from './config.js';

export interface CLIPOutput {
  logitsPerImage: Tensor;
  logitsPerText: Tensor;
  imageEmbeds: Tensor;
  textEmbeds: Tensor;
}

export class CLIP extends Module {
  readonly visual: VisionTransformer | ModifiedResNet;
  readonly text: TextTransformer;
  readonly logitScale: Tensor;

  constructor(readonly config: CLIPConfig, ctx: InitContext) {
    super();
    const v = config.vision;
    this.visual = this.child('visual', v.kind === 'vit' ? new VisionTransformer(ctx, v, config.embedDim, config.activation) : new ModifiedResNet(ctx, v, config.embedDim));
    // The text tower's parameters sit at the top level of the original state dict.
    this.text = new TextTransformer(ctx, config.text, config.embedDim, config.activation);
    this.logitScale = this.param('logit_scale', Tensor.full([], Math.log(1 / 0.07), { device: ctx.device }));
  }

  override namedParameters(prefix = ''): [string, Tensor][] {
    return [...super.namedParameters(prefix), ...this.text.namedParameters(prefix)];
  }
  override namedBuffers(prefix = ''): [string, Tensor][] {
    return [...super.namedBuffers(prefix), ...this.text.namedBuffers(prefix)];
  }
  override modules(): Module[] {
    return [...super.modules(), ...this.text.modules()];
  }

  /** pixels float32 [B,3,R,R] -> [B, embedDim], not normalised. */
  encodeImage(pixels: Tensor): Tensor {
    if (!(pixels instanceof Tensor)) throw new Error('encodeImage: pixels must be a Tensor [B,3,R,R]');
    if (pixels.dtype !== 'float32') throw new Error(`encodeImage: pixels must be float32, got ${pixels.describe()}`);
    return this.visual.forward(pixels);
  }

  /** tokens int32 [B, contextLength] -> [B, embedDim], not normalised. */
  encodeText(tokens: Tensor): Tensor {
    if (!(tokens instanceof Tensor)) throw new Error('encodeText: tokens must be an int32 Tensor [B, contextLength]');
    return this.text.forward(tokens);
  }

  forward(pixels: Tensor, tokens: Tensor): CLIPOutput {
    const imageEmbeds = this.encodeImage(pixels);
    const textEmbeds = this.encodeText(tokens);
    const [logitsPerImage, logitsPerText] = tidy(() => {
      const i = l2Normalize(imageEmbeds);
      const t = l2Normalize(textEmbeds);
      const li = ops.mul(ops.matmul(i, ops.transpose(t)), ops.exp(this.logitScale));
      return [li, ops.contiguous(ops.transpose(li))];
    });
    return { logitsPerImage, logitsPerText, imageEmbeds, textEmbeds };
  }

  /** The symmetric contrastive loss over the batch (fused: no N x N matrix is kept). */
  loss(pixels: Tensor, tokens: Tensor): Tensor {
    const img = this.encodeImage(pixels);
    const txt = this.encodeText(tokens);
    const l = clipLoss(img, txt, this.logitScale);
    img.dispose();
    txt.dispose();
    return l;
  }

  /** Writes safetensors with the original key names and the config in the metadata. */
  async save(path: string): Promise<void> {
    const { saveCLIP } = await import('./load.js');
    await saveCLIP(this, path);
  }

  /** open_clip's rule for parameters without weight decay: gains, biases, norms and the logit scale. */
  static noWeightDecay(name: string, t: Tensor): boolean {
    return t.ndim < 2 || name.includes('bn') || name.includes('ln') || name.includes('bias') || name.includes('logit_scale');
  }
}

export interface CreateOptions {
  seed?: number;
  device?: Device | 'auto';
}

export function resolveDevice(device: Device | 'auto' | undefined): Device {
  if (device === undefined || device === 'auto') {
    try {
      Tensor.empty([0], { device: 'cuda' }).dispose();
      return 'cuda';
    } catch {
      return 'cpu';
    }
  }
  return device;
}

/** A freshly initialised CLIP, as the original initialises it. */
export function createCLIP(config: string | CLIPConfig, opts: CreateOptions = {}): CLIP {
  const cfg = typeof config === 'string' ? resolveConfig(config) : structuredClone(config);
  const device = resolveDevice(opts.device);
  Tensor.empty([0], { device }).dispose(); // an unknown device throws here, listing what exists
  return new CLIP(cfg, { rng: new Random(opts.seed ?? 0), device });
}
