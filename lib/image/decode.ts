// Image decoding to raw uint8 pixels with sharp, keeping what PIL's Image.open would see: the
// stored orientation, no colour management (PIL ignores ICC profiles), and the mode (grey, grey +
// alpha, RGB, RGBA, palette, bilevel or CMYK), which decides how PIL later resizes and converts it.
import sharp, { type Metadata, type OutputInfo, type Sharp } from 'sharp';

/**
 * PIL's image modes that matter here. P (palette) is held expanded to its colours; grey + alpha is
 * held as RGBA with R = G = B, which PIL's LA resizes and converts identically.
 */
export type PilMode = 'L' | 'LA' | 'RGB' | 'RGBA' | 'P' | '1' | 'CMYK';

const MODE_CHANNELS: Record<PilMode, readonly number[]> = { L: [1], '1': [1], LA: [2], RGB: [3], RGBA: [4], CMYK: [4], P: [1, 3] };
const DEFAULT_MODE: Record<number, PilMode> = { 1: 'L', 2: 'LA', 3: 'RGB', 4: 'RGBA' };

/** Raw interleaved uint8 pixels, row-major [height, width, channels]. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  /** 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA or CMYK). */
  channels: number;
  /**
   * How PIL would hold the image (default from channels: L, LA, RGB, RGBA). It decides how PIL
   * resizes it: P (palette: GIF, indexed PNG) and 1 (bilevel) with NEAREST whatever filter is
   * asked for, LA and RGBA premultiplied by alpha; and how convert('RGB') treats it.
   */
  mode?: PilMode;
}

/** The image's PIL mode (given, or implied by its channel count). */
export function modeOf(img: RawImage): PilMode {
  return img.mode ?? DEFAULT_MODE[img.channels];
}

/** A file path, encoded bytes, or already decoded pixels. */
export type ImageInput = string | Uint8Array | RawImage;

export interface DecodeOptions {
  /** Rotate/flip by the EXIF orientation tag. Default false: PIL's Image.open leaves pixels as stored. */
  applyExifOrientation?: boolean;
  /** Largest width or height accepted (default 65535). */
  maxSide?: number;
  /** Largest width * height accepted (default 178956970, PIL's decompression-bomb error threshold). */
  maxPixels?: number;
}

export const SUPPORTED_FORMATS = ['jpeg', 'png', 'webp', 'gif'] as const;
const DEFAULT_MAX_SIDE = 65535;
const DEFAULT_MAX_PIXELS = 2 * 89_478_485;

/** How an input is named in errors: its path, or "input #i" for bytes and pixels. */
export function describeInput(input: ImageInput, index?: number): string {
  if (typeof input === 'string') return `'${input}'`;
  const what = input instanceof Uint8Array ? `${input.byteLength} bytes` : 'pixels';
  return index === undefined ? `input (${what})` : `input #${index} (${what})`;
}

function isRawImage(x: unknown): x is RawImage {
  return typeof x === 'object' && x !== null && !(x instanceof Uint8Array) && 'data' in x && 'width' in x;
}

function checkSize(label: string, width: number, height: number, opts: DecodeOptions): void {
  const maxSide = opts.maxSide ?? DEFAULT_MAX_SIDE;
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!(width >= 1 && height >= 1)) throw new Error(`${label}: image is ${width}x${height} pixels; it must be at least 1x1`);
  if (width > maxSide || height > maxSide) {
    throw new Error(`${label}: image is ${width}x${height} pixels; the longest side allowed is ${maxSide} (option maxSide)`);
  }
  if (width * height > maxPixels) {
    throw new Error(`${label}: image is ${width}x${height} = ${width * height} pixels, more than the ${maxPixels} allowed (option maxPixels)`);
  }
}

/** Checks caller-supplied pixels and returns them as a RawImage (no copy). */
export function checkRawImage(img: RawImage, label = 'image', opts: DecodeOptions = {}): RawImage {
  const { data, width, height, channels } = img;
  if (!(data instanceof Uint8Array)) throw new Error(`${label}: pixel data must be a Uint8Array, got ${data === null ? 'null' : typeof data}`);
  for (const [k, v] of [['width', width], ['height', height], ['channels', channels]] as const) {
    if (!Number.isInteger(v)) throw new Error(`${label}: ${k} must be an integer, got ${v}`);
  }
  if (channels < 1 || channels > 4) throw new Error(`${label}: channels must be 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA), got ${channels}`);
  if (img.mode !== undefined && !MODE_CHANNELS[img.mode]?.includes(channels)) {
    throw new Error(`${label}: mode '${img.mode}' does not fit ${channels} channels`);
  }
  checkSize(label, width, height, opts);
  if (data.length !== width * height * channels) {
    throw new Error(`${label}: ${width}x${height}x${channels} pixels need ${width * height * channels} bytes, got ${data.length}`);
  }
  return img;
}

/**
 * Decodes JPEG, PNG, WebP or GIF (first frame) to uint8 pixels in the image's own PIL mode: grey
 * keeps one channel, palette images are expanded to their colours (mode P, alpha dropped), CMYK
 * JPEGs stay CMYK, RGB(A) stays RGB(A). Errors name the input.
 */
export async function decodeImageAsStored(input: ImageInput, opts: DecodeOptions = {}, label = describeInput(input)): Promise<RawImage> {
  if (isRawImage(input)) return checkRawImage(input, label, opts);
  if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
    throw new Error(`${label}: expected a file path, a Buffer/Uint8Array of encoded bytes, or {data, width, height, channels}; got ${input === null ? 'null' : typeof input}`);
  }
  if (input instanceof Uint8Array && input.byteLength === 0) throw new Error(`${label}: the image data is empty`);
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const bytes = input instanceof Uint8Array && !Buffer.isBuffer(input) ? Buffer.from(input.buffer, input.byteOffset, input.byteLength) : input;
  const why = (e: unknown) => new Error(`${label}: cannot decode the image: ${(e as Error).message ?? e}`);
  let img: Sharp;
  let meta: Metadata;
  try {
    img = sharp(bytes, {
      failOn: 'truncated', // a cut-off file is an error (as in PIL); recoverable warnings are not
      ignoreIcc: true, // PIL returns the stored values; it does no colour management
      autoOrient: !!opts.applyExifOrientation,
      limitInputPixels: maxPixels,
      pages: 1,
    });
    meta = await img.metadata();
  } catch (e) {
    throw why(e);
  }
  const format = String(meta.format);
  if (!(SUPPORTED_FORMATS as readonly string[]).includes(format)) {
    throw new Error(`${label}: unsupported image format '${format}' (supported: JPEG, PNG, WebP, GIF)`);
  }
  const oriented = opts.applyExifOrientation && meta.autoOrient ? meta.autoOrient : meta;
  checkSize(label, oriented.width ?? 0, oriented.height ?? 0, opts);
  const grey = meta.space === 'b-w' || meta.space === 'grey16';
  let mode: PilMode | undefined;
  if (meta.space === 'cmyk') {
    // Keep the stored CMYK (sharp would convert it through a colour profile; PIL converts later
    // with its own formula).
    img = img.pipelineColourspace('cmyk').toColourspace('cmyk');
    mode = 'CMYK';
  } else if (grey && !meta.hasAlpha) {
    img = img.toColourspace('b-w');
    // PIL opens a 1-bit greyscale PNG as mode "1" (resized with NEAREST).
    if (format === 'png' && meta.bitsPerSample === 1 && !meta.isPalette) mode = '1';
  }
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw why(e);
  }
  const { width, height, channels } = out.info;
  checkSize(label, width, height, opts);
  if (out.data.length !== width * height * channels) {
    throw new Error(`${label}: the decoder returned ${out.data.length} bytes for ${width}x${height}x${channels}`);
  }
  let result: RawImage = { data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.length), width, height, channels, mode };
  if (mode === 'CMYK' && channels !== 4) throw new Error(`${label}: CMYK image decoded to ${channels} channels`);
  // A palette image's transparency is not an alpha band in PIL: convert('RGB') ignores it.
  if (meta.isPalette) result = { ...dropAlpha(result), mode: 'P' };
  return result;
}

/** RGBA -> RGB, LA -> L: alpha simply discarded. */
function dropAlpha(img: RawImage): RawImage {
  if (img.channels !== 2 && img.channels !== 4) return img;
  const c = img.channels - 1, n = img.width * img.height;
  const out = new Uint8Array(n * c);
  const src = img.data;
  for (let i = 0, j = 0, k = 0; i < n; i++, k++) {
    for (let q = 0; q < c; q++) out[j++] = src[k++];
    // k++ in the loop header skips the alpha byte
  }
  return { data: out, width: img.width, height: img.height, channels: c };
}

/** PIL's CMYK -> RGB: (255 - K) - C * (255 - K) / 255 with PIL's rounding, per channel. */
function cmykToRGB(img: RawImage): RawImage {
  const n = img.width * img.height, src = img.data, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const nk = 255 - src[4 * i + 3];
    for (let q = 0; q < 3; q++) {
      const t = src[4 * i + q] * nk + 128;
      out[3 * i + q] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return { data: out, width: img.width, height: img.height, channels: 3 };
}

/** PIL's convert('RGB'): grey is replicated, alpha is discarded (no compositing), CMYK converted. */
export function toRGB(img: RawImage): RawImage {
  if (modeOf(img) === 'CMYK') return cmykToRGB(img);
  const base = dropAlpha(img);
  if (base.channels === 3) return base === img && img.mode === undefined ? img : { data: base.data, width: base.width, height: base.height, channels: 3 };
  const n = base.width * base.height;
  const out = new Uint8Array(n * 3);
  const src = base.data;
  for (let i = 0, j = 0; i < n; i++, j += 3) out[j] = out[j + 1] = out[j + 2] = src[i];
  return { data: out, width: base.width, height: base.height, channels: 3 };
}

/** Decodes to RGB uint8 [height, width, 3] (PIL's Image.open(...).convert('RGB')). */
export async function decodeImage(input: ImageInput, opts: DecodeOptions = {}, label?: string): Promise<RawImage> {
  return toRGB(await decodeImageAsStored(input, opts, label ?? describeInput(input)));
}
