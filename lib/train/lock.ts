// Fine-tuning helpers: freezing a tower (its parameters get no gradient; a ResNet's BatchNorm layers
// keep their running statistics and use them in training mode too), and weight-space ensembling of
// fine-tuned and original weights (WiSE-FT).
import { Tensor } from '../tensor.js';
import * as ops from '../ops/index.js';
import { BatchNorm2d } from '../nn/layers.js';
import type { CLIP } from '../models/clip.js';

/** Names of the text tower's parameters (they sit at the top level of the original state dict). */
export function isTextParam(name: string): boolean {
  return !name.startsWith('visual.') && name !== 'logit_scale';
}

function setFrozen(params: [string, Tensor][], frozen: boolean): number {
  for (const [, p] of params) p.requiresGrad = !frozen;
  return params.length;
}

/** Freezes the image tower; BatchNorm layers switch to their running statistics (freezeBatchNorm). */
export function lockImage(model: CLIP, opts: { freezeBatchNorm?: boolean } = {}): number {
  const n = setFrozen(model.visual.namedParameters('visual.'), true);
  if (opts.freezeBatchNorm ?? true) {
    for (const m of model.visual.modules()) if (m instanceof BatchNorm2d) m.frozen = true;
  }
  return n;
}

/** Freezes the text tower (token and positional embeddings, blocks, final norm, projection). */
export function lockText(model: CLIP): number {
  return setFrozen(model.text.namedParameters(''), true);
}

/** Copies every float parameter and buffer to host memory (the weights to ensemble with later). */
export function snapshotWeights(model: CLIP): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of model.stateDict()) if (t.dtype === 'float32') out.set(name, t.toArraySync() as Float32Array);
  return out;
}

/**
 * WiSE-FT: every float weight becomes (1 - alpha) * original + alpha * fine-tuned, in place.
 * alpha = 1 keeps the fine-tuned model, alpha = 0 restores the original.
 */
export function wiseFt(model: CLIP, original: Map<string, Float32Array>, alpha: number): void {
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`wise-ft: alpha must be in [0, 1], got ${alpha}`);
  for (const [name, t] of model.stateDict()) {
    if (t.dtype !== 'float32') continue;
    const o = original.get(name);
    if (!o) throw new Error(`wise-ft: the original weights have no "${name}"`);
    if (o.length !== t.size) throw new Error(`wise-ft: "${name}" has ${o.length} original values for ${t.describe()}`);
    const cur = t.toArraySync() as Float32Array;
    const mixed = new Float32Array(cur.length);
    for (let i = 0; i < cur.length; i++) mixed[i] = (1 - alpha) * o[i] + alpha * cur[i];
    ops.fillFrom(t, mixed);
  }
}
