// Zero-shot accuracy on the shapes dataset: for each scene, which of the 12 colour-shape pairs is
// the first object (all other words of the caption kept)? Chance is 1/12.
import type { CLIP } from '../models/clip.js';
import type { ClipTokenizer } from '../tokenizer/tokenizer.js';
import { ShapesDataset, candidateCaptions, PAIRS } from '../data/shapes.js';
import { argmaxCosine, datasetImages, embedImages, embedTexts } from './evaluate.js';

export interface ShapesZeroShot {
  accuracy: number;
  chance: number;
  n: number;
}

export async function shapesZeroShot(model: CLIP, tok: ClipTokenizer, ds: ShapesDataset, n: number): Promise<ShapesZeroShot> {
  const wasTraining = model.training;
  model.eval();
  try {
    const R = ds.imageSize, D = model.config.embedDim, L = model.config.text.contextLength, K = PAIRS.length;
    const img = embedImages(model, await datasetImages(ds, n), n, R);
    const captions: string[] = [];
    const truth: number[] = [];
    for (let i = 0; i < n; i++) {
      const { scene } = ds.scene(i);
      captions.push(...candidateCaptions(scene));
      truth.push(PAIRS.indexOf(`${scene.color1} ${scene.shape1}`));
    }
    const txt = embedTexts(model, tok.tokenizeToArray(captions, { contextLength: L }), n * K, L);
    let hits = 0;
    for (let i = 0; i < n; i++) if (argmaxCosine(img, i * D, txt, K, D, i * K * D) === truth[i]) hits++;
    return { accuracy: hits / n, chance: 1 / K, n };
  } finally {
    model.train(wasTraining);
  }
}
