// Float64 references for the convolutional-network ops, written as the definitions (direct loops).

export type Shape4 = [number, number, number, number];

export function convOutSize(H: number, W: number, kh: number, kw: number, s: number, p: number): [number, number] {
  return [Math.floor((H + 2 * p - kh) / s) + 1, Math.floor((W + 2 * p - kw) / s) + 1];
}

/** y[n,o,oy,ox] = b[o] + sum x[n,c,oy*s-p+ky,ox*s-p+kx] * w[o,c,ky,kx] (zero outside x). */
export function conv2dRef(x: ArrayLike<number>, xs: Shape4, w: ArrayLike<number>, ws: Shape4, b: ArrayLike<number> | null, s: number, p: number): Float64Array {
  const [N, C, H, W] = xs, [O, , kh, kw] = ws;
  const [Ho, Wo] = convOutSize(H, W, kh, kw, s, p);
  const y = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let acc = b ? b[o] : 0;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * s - p + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * s - p + kx;
                if (ix < 0 || ix >= W) continue;
                acc += x[((n * C + c) * H + iy) * W + ix] * w[((o * C + c) * kh + ky) * kw + kx];
              }
            }
          y[((n * O + o) * Ho + oy) * Wo + ox] = acc;
        }
  return y;
}

/** The gradients of sum(conv2d(x, w, b) * dy): dx, dw and db, by the adjoint loops. */
export function conv2dGradRef(x: ArrayLike<number>, xs: Shape4, w: ArrayLike<number>, ws: Shape4, dy: ArrayLike<number>, s: number, p: number) {
  const [N, C, H, W] = xs, [O, , kh, kw] = ws;
  const [Ho, Wo] = convOutSize(H, W, kh, kw, s, p);
  const dx = new Float64Array(N * C * H * W), dw = new Float64Array(O * C * kh * kw), db = new Float64Array(O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          const g = dy[((n * O + o) * Ho + oy) * Wo + ox];
          db[o] += g;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * s - p + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * s - p + kx;
                if (ix < 0 || ix >= W) continue;
                const xi = ((n * C + c) * H + iy) * W + ix, wi = ((o * C + c) * kh + ky) * kw + kx;
                dx[xi] += g * w[wi];
                dw[wi] += g * x[xi];
              }
            }
        }
  return { dx, dw, db };
}

export interface BatchNormRef {
  y: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

/**
 * PyTorch's BatchNorm2d: training normalises with the batch mean and biased variance and moves the
 * running statistics toward the batch mean and unbiased variance; evaluation uses the running ones.
 */
export function batchNormRef(
  x: ArrayLike<number>, xs: Shape4, w: ArrayLike<number> | null, b: ArrayLike<number> | null,
  rm: ArrayLike<number>, rv: ArrayLike<number>, training: boolean, momentum: number, eps: number,
): BatchNormRef {
  const [N, C, H, W] = xs, HW = H * W, M = N * HW;
  const y = new Float64Array(N * C * HW);
  const runningMean = Float64Array.from(rm), runningVar = Float64Array.from(rv);
  for (let c = 0; c < C; c++) {
    let mean: number, variance: number;
    if (training) {
      let s = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) s += x[(n * C + c) * HW + i];
      mean = s / M;
      let ss = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) ss += (x[(n * C + c) * HW + i] - mean) ** 2;
      variance = ss / M;
      runningMean[c] = (1 - momentum) * rm[c] + momentum * mean;
      runningVar[c] = (1 - momentum) * rv[c] + momentum * (ss / (M - 1));
    } else {
      mean = rm[c];
      variance = rv[c];
    }
    const rstd = 1 / Math.sqrt(variance + eps);
    for (let n = 0; n < N; n++)
      for (let i = 0; i < HW; i++) {
        const k = (n * C + c) * HW + i;
        y[k] = (x[k] - mean) * rstd * (w ? w[c] : 1) + (b ? b[c] : 0);
      }
  }
  return { y, runningMean, runningVar };
}

/** Mean over each k x k window at stride s, no padding, floor mode. */
export function avgPoolRef(x: ArrayLike<number>, xs: Shape4, k: number, s: number): Float64Array {
  const [N, C, H, W] = xs;
  const Ho = Math.floor((H - k) / s) + 1, Wo = Math.floor((W - k) / s) + 1;
  const y = new Float64Array(N * C * Ho * Wo);
  for (let q = 0; q < N * C; q++)
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        let acc = 0;
        for (let ky = 0; ky < k; ky++)
          for (let kx = 0; kx < k; kx++) acc += x[(q * H + oy * s + ky) * W + ox * s + kx];
        y[(q * Ho + oy) * Wo + ox] = acc / (k * k);
      }
  return y;
}
