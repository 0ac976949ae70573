// One training image: decode (file or bytes), resize the shorter side, centre-crop, normalise, as
// float32 [3, R, R].
import { decodeImage, type RawImage } from '../image/decode.js';
import { clipCrop } from '../image/preprocess.js';

export interface ImageTransform {
  size: number;
  mean: readonly number[];
  std: readonly number[];
}

export function normalizeRGB(rgb: RawImage, t: ImageTransform): Float32Array {
  const n = t.size * t.size;
  const out = new Float32Array(3 * n);
  for (let k = 0; k < n; k++) {
    for (let c = 0; c < 3; c++) out[c * n + k] = (rgb.data[k * 3 + c] / 255 - t.mean[c]) / t.std[c];
  }
  return out;
}

export async function loadImage(input: string | Uint8Array, t: ImageTransform): Promise<Float32Array> {
  const img = await decodeImage(input);
  return normalizeRGB(clipCrop(img, t.size), t);
}
