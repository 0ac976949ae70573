// Gradient accumulation that equals one large batch for the contrastive loss (open_clip's
// --accum-freq): the loss couples every image with every caption, so each micro-batch's features
// are first computed without a graph and cached; then each micro-batch is re-encoded with a graph
// and the full-batch loss is back-propagated through its rows only. Summed over micro-batches this
// is exactly the large-batch gradient. The temperature's gradient is taken once (in the last pass),
// not once per micro-batch.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import * as ops from '../ops/index.js';
import { clipLoss } from '../ops/loss.js';
import type { CLIP } from '../models/clip.js';

export interface MicroBatch {
  pixels: Tensor;
  tokens: Tensor;
}

/** Forward and backward over the micro-batches as one batch; returns the (large-batch) loss. */
export function accumulateGradients(model: CLIP, micro: readonly MicroBatch[]): number {
  if (micro.length === 0) throw new Error('accumulateGradients: no micro-batches');
  if (micro.length === 1) {
    return tidy(() => {
      const loss = model.loss(micro[0].pixels, micro[0].tokens);
      const v = loss.item();
      loss.backward();
      return v;
    });
  }
  const cached = noGrad(() => micro.map((m) => ({ img: model.encodeImage(m.pixels), txt: model.encodeText(m.tokens) })));
  let value = NaN;
  try {
    micro.forEach((m, j) => {
      tidy(() => {
        const img = model.encodeImage(m.pixels);
        const txt = model.encodeText(m.tokens);
        const imgs = cached.map((c, k) => (k === j ? img : c.img));
        const txts = cached.map((c, k) => (k === j ? txt : c.txt));
        const last = j === micro.length - 1;
        const scale = last ? model.logitScale : Tensor.from(model.logitScale.toArraySync() as Float32Array, model.logitScale.shape, { device: model.logitScale.device });
        const loss = clipLoss(ops.concat(imgs, 0), ops.concat(txts, 0), scale);
        if (last) value = loss.item();
        loss.backward();
      });
    });
  } finally {
    for (const c of cached) {
      c.img.dispose();
      c.txt.dispose();
    }
  }
  return value;
}
