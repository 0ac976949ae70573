// Resizing a ViT's positional grid to another resolution by bicubic interpolation, as
// ViT-L/14@336px was made from 224 (PyTorch's F.interpolate(mode='bicubic', align_corners=False)).

function cubic(x: number): number {
  const A = -0.75; // PyTorch's bicubic coefficient
  x = Math.abs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0;
}

function resize1d(src: Float64Array[], outLen: number): Float64Array[] {
  const inLen = src.length;
  const scale = inLen / outLen;
  return Array.from({ length: outLen }, (_, o) => {
    const x = (o + 0.5) * scale - 0.5;
    const x0 = Math.floor(x);
    const t = x - x0;
    const acc = new Float64Array(src[0].length);
    for (let k = -1; k <= 2; k++) {
      const w = cubic(k - t);
      const s = src[Math.min(inLen - 1, Math.max(0, x0 + k))];
      for (let c = 0; c < acc.length; c++) acc[c] += w * s[c];
    }
    return acc;
  });
}

/**
 * pos [1 + gh*gw, width] (class token first) -> [1 + oh*ow, width].
 */
export function resizePositionalEmbedding(pos: Float32Array, width: number, from: [number, number], to: [number, number]): Float32Array {
  const [gh, gw] = from, [oh, ow] = to;
  if (pos.length !== (1 + gh * gw) * width) throw new Error(`resizePositionalEmbedding: ${pos.length} values do not match a ${gh}x${gw} grid of width ${width}`);
  const row = (i: number) => Float64Array.from(pos.subarray(i * width, (i + 1) * width));
  // rows first (along x within each grid row), then columns
  const grid: Float64Array[][] = Array.from({ length: gh }, (_, y) => Array.from({ length: gw }, (_, x) => row(1 + y * gw + x)));
  const wide = grid.map((r) => resize1d(r, ow));
  const cols = Array.from({ length: ow }, (_, x) => resize1d(wide.map((r) => r[x]), oh));
  const out = new Float32Array((1 + oh * ow) * width);
  out.set(pos.subarray(0, width), 0);
  for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) out.set(cols[x][y], (1 + y * ow + x) * width);
  return out;
}
