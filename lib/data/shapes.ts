// The embedded dataset: scenes of two coloured shapes with captions that describe them ("a small
// red circle above a blue square"), rendered to pixels here (no download). Some colour-shape pairs
// are held out: training scenes never show them, and the zero-shot test asks which colour and shape
// the first object has in scenes built from exactly those unseen pairs.
import { Random } from '../nn/random.js';
import { BYTE_ORDER, BYTE_TO_CHAR } from '../tokenizer/bytes.js';
import { END_OF_WORD, EOT_TEXT, SOT_TEXT } from '../tokenizer/bpe.js';
import { ClipTokenizer } from '../tokenizer/tokenizer.js';
import { trainBPE } from '../tokenizer/train.js';
import type { Dataset, Example } from './types.js';
import type { ExampleJob } from './jobs.js';

export const COLORS: Record<string, [number, number, number]> = {
  red: [0.9, 0.15, 0.1], green: [0.15, 0.8, 0.2], blue: [0.15, 0.3, 0.95], yellow: [0.95, 0.9, 0.1],
};
export const SHAPES = ['circle', 'square', 'triangle'] as const;
export const SIZES = ['small', 'large'] as const;
export const RELATIONS = ['above', 'below', 'left of', 'right of'] as const;
type Shape = (typeof SHAPES)[number];

export interface Scene {
  size: (typeof SIZES)[number];
  color1: string;
  shape1: Shape;
  relation: (typeof RELATIONS)[number];
  color2: string;
  shape2: Shape;
}

const colorNames = Object.keys(COLORS);
/** Every colour-shape pair, as "red circle". */
export const PAIRS = colorNames.flatMap((c) => SHAPES.map((s) => `${c} ${s}`));
/** Pairs never shown in training: each colour and each shape still appears with others. */
export const HELD_OUT = new Set(['red triangle', 'green circle', 'blue square', 'yellow triangle']);

export function caption(s: Scene): string {
  return `a ${s.size} ${s.color1} ${s.shape1} ${s.relation} a ${s.color2} ${s.shape2}`;
}

/**
 * Training captions also come in partial forms (colours only, shapes only), as real captions
 * leave things out; they tie each word to one attribute, which is what lets unseen colour-shape
 * pairs be recognised. Evaluation always uses the full form.
 */
export function captionVariant(s: Scene, u: number): string {
  if (u < 0.5) return caption(s);
  if (u < 0.75) return `a ${s.size} ${s.color1} shape ${s.relation} a ${s.color2} shape`;
  return `a ${s.size} ${s.shape1} ${s.relation} a ${s.shape2}`;
}

/** A random scene; `heldOut` picks the first object from the held-out pairs, else none is held out. */
export function randomScene(r: Random, heldOut: boolean): Scene {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r.next() * xs.length)];
  const allowed = PAIRS.filter((p) => !HELD_OUT.has(p));
  const first = heldOut ? pick([...HELD_OUT]) : pick(allowed);
  const [color1, shape1] = first.split(' ') as [string, Shape];
  let second: string;
  do second = pick(allowed); while (second === first);
  const [color2, shape2] = second.split(' ') as [string, Shape];
  return { size: pick(SIZES), color1, shape1, relation: pick(RELATIONS), color2, shape2 };
}

function inside(shape: Shape, dx: number, dy: number, rad: number): boolean {
  if (shape === 'circle') return dx * dx + dy * dy <= rad * rad;
  if (shape === 'square') return Math.abs(dx) <= rad * 0.85 && Math.abs(dy) <= rad * 0.85;
  // Upward triangle: apex at -rad, base at +rad.
  const t = (dy + rad) / (2 * rad);
  return t >= 0 && t <= 1 && Math.abs(dx) <= t * rad;
}

/** Renders a scene to RGB in [0, 1], [3, R, R] planar, with a little pixel noise and jittered positions. */
export function renderScene(s: Scene, R: number, r: Random): Float32Array {
  const img = new Float32Array(3 * R * R);
  const bg = 0.35 + 0.1 * r.next();
  for (let i = 0; i < img.length; i++) img[i] = bg + 0.03 * (r.next() - 0.5);
  const big = s.size === 'large' ? 0.22 : 0.15;
  const r1 = big * R, r2 = 0.17 * R;
  // Object 1 goes on the named side of object 2; positions jitter along both axes.
  const along = 0.26 * R, jit = () => (r.next() - 0.5) * 0.16 * R;
  const c = R / 2 + jit() * 0.5, c2 = R / 2 + jit() * 0.5;
  let p1: [number, number], p2: [number, number];
  switch (s.relation) {
    case 'above': p1 = [c + jit(), R / 2 - along]; p2 = [c2 + jit(), R / 2 + along]; break;
    case 'below': p1 = [c + jit(), R / 2 + along]; p2 = [c2 + jit(), R / 2 - along]; break;
    case 'left of': p1 = [R / 2 - along, c + jit()]; p2 = [R / 2 + along, c2 + jit()]; break;
    default: p1 = [R / 2 + along, c + jit()]; p2 = [R / 2 - along, c2 + jit()];
  }
  const draw = (shape: Shape, color: string, [cx, cy]: [number, number], rad: number) => {
    const rgb = COLORS[color];
    for (let y = 0; y < R; y++) {
      for (let x = 0; x < R; x++) {
        if (!inside(shape, x + 0.5 - cx, y + 0.5 - cy, rad)) continue;
        for (let ch = 0; ch < 3; ch++) img[ch * R * R + y * R + x] = rgb[ch];
      }
    }
  };
  draw(s.shape2, s.color2, p2, r2);
  draw(s.shape1, s.color1, p1, r1);
  return img;
}

export interface ShapesOptions {
  size: number;
  imageSize?: number;
  seed?: number;
  /** Scenes whose first object is a held-out pair (the zero-shot test set). */
  heldOut?: boolean;
  /** Partial captions for some scenes (see captionVariant); default true for training sets. */
  variants?: boolean;
  mean?: readonly number[];
  std?: readonly number[];
}

/** Scene i is a function of (seed, i): the dataset needs no storage and is identical everywhere. */
export class ShapesDataset implements Dataset {
  readonly name: string;
  readonly length: number;
  readonly imageSize: number;
  private readonly seed: number;
  constructor(private readonly opts: ShapesOptions) {
    this.length = opts.size;
    this.imageSize = opts.imageSize ?? 32;
    this.seed = opts.seed ?? 0;
    this.name = `shapes${opts.heldOut ? '-heldout' : ''}`;
  }
  scene(i: number): { scene: Scene; rng: Random } {
    const r = new Random((this.seed * 2654435761 + i * 40503 + (this.opts.heldOut ? 977 : 0)) >>> 0);
    return { scene: randomScene(r, Boolean(this.opts.heldOut)), rng: r };
  }
  get(i: number): Example {
    const { scene, rng } = this.scene(i);
    const img = renderScene(scene, this.imageSize, rng);
    const mean = this.opts.mean ?? [0.5, 0.5, 0.5], std = this.opts.std ?? [0.25, 0.25, 0.25];
    const n = this.imageSize * this.imageSize;
    for (let ch = 0; ch < 3; ch++) for (let k = 0; k < n; k++) img[ch * n + k] = (img[ch * n + k] - mean[ch]) / std[ch];
    const variants = this.opts.variants ?? !this.opts.heldOut;
    return { image: img, caption: variants ? captionVariant(scene, rng.next()) : caption(scene) };
  }
  /** Example i for a worker thread: the options rebuild the same dataset there. */
  job(i: number): ExampleJob {
    return { op: 'shapes', options: this.opts, index: i };
  }
}

/** Every caption the generator can write (training and held-out). */
export function allCaptions(): string[] {
  const out: string[] = [];
  for (const size of SIZES) for (const relation of RELATIONS) {
    for (const c1 of colorNames) for (const c2 of colorNames) out.push(`a ${size} ${c1} shape ${relation} a ${c2} shape`);
    for (const s1 of SHAPES) for (const s2 of SHAPES) out.push(`a ${size} ${s1} ${relation} a ${s2}`);
  }
  for (const size of SIZES) for (const p1 of PAIRS) for (const relation of RELATIONS) for (const p2 of PAIRS) {
    const [color1, shape1] = p1.split(' ') as [string, Shape];
    const [color2, shape2] = p2.split(' ') as [string, Shape];
    out.push(caption({ size, color1, shape1, relation, color2, shape2 }));
  }
  return out;
}

/** A byte-level BPE learned from the generator's captions (CLIP's format; the end token is the largest id). */
export function shapesTokenizer(vocabSize = 600): ClipTokenizer {
  const merges = trainBPE(allCaptions(), { vocabSize, minFrequency: 2 });
  const bytes = BYTE_ORDER.map((b) => BYTE_TO_CHAR[b]);
  const tokens = [...bytes, ...bytes.map((c) => c + END_OF_WORD), ...merges.map(([a, b]) => a + b), SOT_TEXT, EOT_TEXT];
  return new ClipTokenizer({ tokens, merges, source: 'shapes captions' });
}

/** The zero-shot candidates for a scene: its caption with the first object's colour and shape replaced by every pair. */
export function candidateCaptions(s: Scene): string[] {
  return PAIRS.map((p) => {
    const [color1, shape1] = p.split(' ') as [string, Shape];
    return caption({ ...s, color1, shape1 });
  });
}
