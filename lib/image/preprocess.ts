// The original CLIP image transform, reproduced exactly:
//   Resize(N, BICUBIC) -> CenterCrop(N) -> convert('RGB') -> ToTensor() -> Normalize(mean, std)
// on a PIL image. torchvision's Resize on a PIL image calls PIL's Image.resize, so the resampling
// is PIL's (the native resample_bicubic op), including what Image.resize does around it: RGBA and
// LA images are resized premultiplied by alpha, palette (P) and bilevel (1) images with NEAREST.
import { Tensor, runRaw, type Device } from '../tensor.js';
import { decodeImageAsStored, describeInput, checkRawImage, modeOf, toRGB, type DecodeOptions, type ImageInput, type RawImage } from './decode.js';

// The normalisation of the original CLIP transform (models may override it in their config).
import { CLIP_MEAN, CLIP_STD } from '../models/config.js';
export { CLIP_MEAN, CLIP_STD };

export interface PreprocessOptions extends DecodeOptions {
  /** Output side N (default 224). */
  size?: number;
  mean?: readonly number[];
  std?: readonly number[];
  /** Images decoded at once (default 8); sharp decodes on its own threads. */
  concurrency?: number;
  /** Where the result goes (default 'cpu'); the work itself is done on the CPU. */
  device?: Device;
  dtype?: 'float32' | 'bfloat16';
}

/** A source region [x0, y0, x1, y1] in pixels, as PIL's resize(box=...). */
export type Box = readonly [number, number, number, number];

/** PIL's ImagingResample with the BICUBIC filter: every channel resampled on its own, bit-exact. */
export function resampleBicubic(img: RawImage, width: number, height: number, box?: Box): RawImage {
  checkRawImage(img, 'resampleBicubic: image');
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`resampleBicubic: output size must be positive integers, got ${width}x${height}`);
  }
  const b = box ?? [0, 0, img.width, img.height];
  if (b.length !== 4 || !b.every((v) => Number.isFinite(v))) throw new Error(`resampleBicubic: box must be 4 finite numbers, got [${b.join(', ')}]`);
  const src = Tensor.from(img.data, [img.height, img.width, img.channels]);
  const dst = Tensor.empty([height, width, img.channels], { dtype: 'uint8' });
  try {
    runRaw('resample_bicubic', [src], [dst], [], [b[0], b[1], b[2], b[3]]);
    return { data: dst.toArraySync() as Uint8Array, width, height, channels: img.channels };
  } finally {
    src.dispose();
    dst.dispose();
  }
}

/** PIL's NEAREST resize of the whole image (ImagingScaleAffine): source x = int((x + 0.5) * W / w). */
export function resampleNearest(img: RawImage, width: number, height: number): RawImage {
  const { data, channels: c } = img;
  const out = new Uint8Array(width * height * c);
  // The positions are accumulated sums, as PIL's, so rounding matches it step for step.
  const ax = img.width / width, ay = img.height / height;
  const xin = new Int32Array(width);
  for (let x = 0, xo = ax * 0.5; x < width; x++, xo += ax) xin[x] = xo < 0 ? -1 : Math.trunc(xo);
  for (let y = 0, yo = ay * 0.5; y < height; y++, yo += ay) {
    const yi = yo < 0 ? -1 : Math.trunc(yo);
    if (yi < 0 || yi >= img.height) continue; // PIL leaves such pixels zero
    for (let x = 0; x < width; x++) {
      const xi = xin[x];
      if (xi < 0 || xi >= img.width) continue;
      const s = (yi * img.width + xi) * c, d = (y * width + x) * c;
      for (let q = 0; q < c; q++) out[d + q] = data[s + q];
    }
  }
  return { data: out, width, height, channels: c, mode: img.mode };
}

// PIL's RGBA -> RGBa: c * a / 255 rounded, with its integer trick ((t >> 8) + t) >> 8, t = c*a + 128.
function premultiply(img: RawImage): RawImage {
  const c = img.channels, src = img.data, out = new Uint8Array(src.length);
  for (let p = 0; p < src.length; p += c) {
    const a = src[p + c - 1];
    for (let q = 0; q < c - 1; q++) {
      const t = src[p + q] * a + 128;
      out[p + q] = ((t >> 8) + t) >> 8;
    }
    out[p + c - 1] = a;
  }
  return { ...img, data: out };
}

// PIL's RGBa -> RGBA: min(255, floor(255 c / a)), left alone where a is 0 or 255.
function unpremultiply(img: RawImage): RawImage {
  const c = img.channels, d = img.data;
  for (let p = 0; p < d.length; p += c) {
    const a = d[p + c - 1];
    if (a === 0 || a === 255) continue;
    for (let q = 0; q < c - 1; q++) d[p + q] = Math.min(255, Math.floor((255 * d[p + q]) / a));
  }
  return img;
}

/**
 * PIL's Image.resize(size, BICUBIC) for an image of this mode: a copy when the size is the same,
 * NEAREST for P and 1, premultiplied alpha for LA and RGBA, plain BICUBIC for L, RGB and CMYK.
 */
export function resizePIL(img: RawImage, width: number, height: number): RawImage {
  checkRawImage(img, 'resize: image');
  const mode = modeOf(img);
  if (width === img.width && height === img.height) return { ...img, data: new Uint8Array(img.data) };
  if (mode === 'P' || mode === '1') return resampleNearest(img, width, height);
  const out = mode === 'LA' || mode === 'RGBA' ? unpremultiply(resampleBicubic(premultiply(img), width, height)) : resampleBicubic(img, width, height);
  return { ...out, mode: img.mode };
}

/** torchvision's output size for Resize(size) with an int: the short side becomes `size`. */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((size * long) / short); // Python's int(size * long / short)
  return width <= height ? { width: size, height: newLong } : { width: newLong, height: size };
}

/** The largest resized image accepted: a guard against extreme aspect ratios, not a PIL limit. */
const MAX_RESIZED_PIXELS = 1 << 26;

/** torchvision Resize(size, BICUBIC) on a PIL image: the shorter side becomes `size`. */
export function resizeShorterSide(img: RawImage, size: number): RawImage {
  checkSide('resizeShorterSide', size);
  checkRawImage(img, 'resizeShorterSide: image');
  const { width, height } = resizedSize(img.width, img.height, size);
  if (width < 1 || height < 1 || width * height > MAX_RESIZED_PIXELS) {
    throw new Error(`resizeShorterSide: a ${img.width}x${img.height} image resized to short side ${size} would be ${width}x${height}; ` +
      `the aspect ratio is too extreme (at most ${MAX_RESIZED_PIXELS} resized pixels)`);
  }
  return resizePIL(img, width, height);
}

// Python's round() on (d / 2) for an integer d: halves go to the even neighbour.
function roundHalfEven(d: number): number {
  const q = Math.floor(d / 2);
  return d % 2 === 0 ? q : q % 2 === 0 ? q : q + 1;
}

/** torchvision CenterCrop(size) on a PIL image (zero padding where the image is smaller). */
export function centerCrop(img: RawImage, size: number): RawImage {
  checkSide('centerCrop', size);
  checkRawImage(img, 'centerCrop: image');
  // With padding the image is first centred in a size-wide canvas (floor of half the excess on
  // the left/top), after which the crop of that axis starts at 0.
  const off = (n: number) => (size > n ? -Math.floor((size - n) / 2) : roundHalfEven(n - size));
  const left = off(img.width), top = off(img.height), c = img.channels;
  const out = new Uint8Array(size * size * c);
  const x0 = Math.max(0, -left), x1 = Math.min(size, img.width - left);
  for (let y = 0; y < size; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const s = (sy * img.width + x0 + left) * c;
    out.set(img.data.subarray(s, s + (x1 - x0) * c), (y * size + x0) * c);
  }
  return { data: out, width: size, height: size, channels: c, mode: img.mode };
}

function checkSide(op: string, size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > 16384) throw new Error(`${op}: size must be an integer in [1, 16384], got ${size}`);
}

function checkStats(name: string, v: readonly number[] | undefined, nonZero: boolean): number[] {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new Error(`preprocess: ${name} must be 3 finite numbers (one per RGB channel), got ${JSON.stringify(v)}`);
  }
  if (nonZero && v.some((x) => x === 0)) throw new Error(`preprocess: ${name} must not contain 0, got ${JSON.stringify(v)}`);
  return [...v];
}

/** Resize -> CenterCrop -> RGB, as uint8 [size, size, 3]. */
export function clipCrop(img: RawImage, size: number): RawImage {
  return toRGB(centerCrop(resizeShorterSide(img, size), size));
}

/** Writes ToTensor + Normalize of an RGB [size, size, 3] image into `out` (a [3, size, size] view). */
function normalizeInto(rgb: RawImage, out: Tensor, mean: number[], std: number[]): void {
  const src = Tensor.from(rgb.data, [rgb.height, rgb.width, 3]);
  try {
    runRaw('image_normalize', [src], [out], [], [...mean, ...std]);
  } finally {
    src.dispose();
  }
}

/**
 * The CLIP image transform on one image or a batch: returns [N, 3, size, size]. Inputs are file
 * paths, encoded bytes, or decoded pixels; a failure names the item.
 */
export async function preprocess(inputs: ImageInput | readonly ImageInput[], opts: PreprocessOptions = {}): Promise<Tensor> {
  const list: readonly ImageInput[] = Array.isArray(inputs) ? inputs : [inputs as ImageInput];
  const size = opts.size ?? 224;
  checkSide('preprocess', size);
  const mean = checkStats('mean', opts.mean ?? CLIP_MEAN, false);
  const std = checkStats('std', opts.std ?? CLIP_STD, true);
  const concurrency = opts.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`preprocess: concurrency must be a positive integer, got ${concurrency}`);
  const dtype = opts.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'bfloat16') throw new Error(`preprocess: dtype must be 'float32' or 'bfloat16', got '${String(dtype)}'`);
  const n = list.length;
  const plane = 3 * size * size;
  const batch = Tensor.empty([n, 3, size, size], { dtype });
  const batchLabel = (i: number) => (n > 1 ? ` (item ${i} of ${n})` : '');

  const one = async (i: number): Promise<void> => {
    const label = describeInput(list[i], n > 1 || typeof list[i] !== 'string' ? i : undefined);
    try {
      const img = await decodeImageAsStored(list[i], opts, label);
      const rgb = clipCrop(img, size);
      const slot = batch.view([3, size, size], [size * size, size, 1], batch.offset + i * plane);
      try {
        normalizeInto(rgb, slot, mean, std);
      } finally {
        slot.dispose();
      }
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      throw new Error(`preprocess${batchLabel(i)}: ${msg.includes(label) ? msg : `${label}: ${msg}`}`, { cause: e });
    }
  };

  try {
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < n) {
        const i = next++;
        try {
          await one(i);
        } catch (e) {
          failed = true;
          throw e;
        }
      }
    };
    const results = await Promise.allSettled(Array.from({ length: Math.min(concurrency, n) }, worker));
    // Report the first failing item in input order, whichever finished first.
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as Error);
    if (errors.length) throw errors.sort((a, b) => itemOf(a) - itemOf(b))[0];
  } catch (e) {
    batch.dispose();
    throw e;
  }
  if (!opts.device || opts.device === 'cpu') return batch;
  const moved = batch.to(opts.device);
  if (moved !== batch) batch.dispose();
  return moved;
}

function itemOf(e: Error): number {
  const m = /\(item (\d+) of/.exec(e.message);
  return m ? Number(m[1]) : 0;
}
