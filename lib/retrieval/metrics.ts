// Retrieval recall@K over paired images and texts, as the CLIP paper's Flickr30k / MSCOCO tables:
// image -> text counts an image as found when any of its captions ranks in the top K; text ->
// image counts a caption when its image does. Ties keep the lower index first (a stable sort).

export interface RecallAtK {
  [k: number]: number;
}

export interface RetrievalRecall {
  imageToText: RecallAtK;
  textToImage: RecallAtK;
  images: number;
  texts: number;
}

/** Similarities [n, m] of unit rows a [n, D] and b [m, D] (float64 sums). */
export function similarityMatrix(a: Float32Array, b: Float32Array, D: number): Float64Array {
  const n = a.length / D, m = b.length / D;
  if (!Number.isInteger(n) || !Number.isInteger(m)) throw new Error(`similarityMatrix: ${a.length} and ${b.length} values are not rows of ${D}`);
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += a[i * D + d] * b[j * D + d];
      out[i * m + j] = s;
    }
  }
  return out;
}

/** 0-based rank of candidate c in row `row` of sims [.., m]: how many candidates come before it. */
function rankOf(sims: Float64Array, row: number, m: number, c: number): number {
  const v = sims[row * m + c];
  let r = 0;
  for (let j = 0; j < m; j++) {
    const s = sims[row * m + j];
    if (s > v || (s === v && j < c)) r++;
  }
  return r;
}

/**
 * Recall@K both ways. `textImage[t]` is the index of text t's image (several texts may share one).
 * Embeddings are unit rows: images [nImages, D], texts [nTexts, D].
 */
export function retrievalRecall(imageEmbeds: Float32Array, textEmbeds: Float32Array, textImage: ArrayLike<number>, D: number, ks: readonly number[] = [1, 5, 10]): RetrievalRecall {
  const nI = imageEmbeds.length / D, nT = textEmbeds.length / D;
  if (textImage.length !== nT) throw new Error(`retrievalRecall: ${nT} texts but ${textImage.length} text -> image links`);
  const captionsOf: number[][] = Array.from({ length: nI }, () => []);
  for (let t = 0; t < nT; t++) {
    const i = textImage[t];
    if (!Number.isInteger(i) || i < 0 || i >= nI) throw new Error(`retrievalRecall: text ${t} links to image ${i}, there are ${nI}`);
    captionsOf[i].push(t);
  }
  const i2t = similarityMatrix(imageEmbeds, textEmbeds, D);
  const t2i = similarityMatrix(textEmbeds, imageEmbeds, D);
  const imageToText: RecallAtK = {}, textToImage: RecallAtK = {};
  const imgRanks = captionsOf.map((caps, i) => (caps.length ? Math.min(...caps.map((t) => rankOf(i2t, i, nT, t))) : Infinity));
  const txtRanks = Array.from({ length: nT }, (_, t) => rankOf(t2i, t, nI, textImage[t]));
  const withCaptions = captionsOf.filter((c) => c.length).length;
  for (const k of ks) {
    imageToText[k] = imgRanks.filter((r) => r < k).length / withCaptions;
    textToImage[k] = txtRanks.filter((r) => r < k).length / nT;
  }
  return { imageToText, textToImage, images: nI, texts: nT };
}

/** Indices and scores of the k rows of `rows` [n, D] most similar to `query` [D]. */
export function topK(query: Float32Array, rows: Float32Array, D: number, k: number, filter?: (i: number) => boolean): { index: number; score: number }[] {
  const n = rows.length / D;
  const hits: { index: number; score: number }[] = [];
  for (let i = 0; i < n; i++) {
    if (filter && !filter(i)) continue;
    let s = 0;
    for (let d = 0; d < D; d++) s += query[d] * rows[i * D + d];
    hits.push({ index: i, score: s });
  }
  hits.sort((a, b) => b.score - a.score || a.index - b.index);
  return hits.slice(0, k);
}
