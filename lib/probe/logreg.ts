// Multinomial logistic regression on frozen features, fitted with L-BFGS:
//   minimise (1/N) sum_i -log softmax(W x_i + b)[y_i] + (lambda / 2) ||W||^2   (the bias is not penalised)
import { minimizeLbfgs, type LbfgsOptions } from './lbfgs.js';
import { Tensor } from '../tensor.js';
import { gemmRaw } from '../ops/matmul.js';

export interface Features {
  /** Rows [n, dim]. */
  x: Float32Array;
  /** Class index of each row, in [0, numClasses). */
  y: ArrayLike<number>;
  n: number;
  dim: number;
}

export class LogisticRegression {
  constructor(
    /** Weights [K, D] then biases [K], as one vector. */
    readonly params: Float64Array,
    readonly numClasses: number,
    readonly dim: number,
    readonly lambda: number,
  ) {}

  /** Class scores [n, K] of feature rows. */
  logits(x: Float32Array, n = x.length / this.dim): Float64Array {
    const K = this.numClasses, D = this.dim, p = this.params;
    const out = new Float64Array(n * K);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < K; k++) {
        let s = p[K * D + k];
        for (let d = 0; d < D; d++) s += p[k * D + d] * x[i * D + d];
        out[i * K + k] = s;
      }
    }
    return out;
  }

  predict(x: Float32Array, n = x.length / this.dim): Int32Array {
    const K = this.numClasses, lg = this.logits(x, n), out = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (lg[i * K + k] > lg[i * K + best]) best = k;
      out[i] = best;
    }
    return out;
  }

  accuracy(data: Features): number {
    const pred = this.predict(data.x, data.n);
    let hits = 0;
    for (let i = 0; i < data.n; i++) if (pred[i] === data.y[i]) hits++;
    return data.n ? hits / data.n : 0;
  }
}

export function checkFeatures(data: Features, numClasses: number, where = 'features'): void {
  if (data.x.length !== data.n * data.dim) throw new Error(`${where}: ${data.n} rows of ${data.dim} need ${data.n * data.dim} values, got ${data.x.length}`);
  if (data.y.length !== data.n) throw new Error(`${where}: ${data.n} rows but ${data.y.length} labels`);
  for (let i = 0; i < data.n; i++) {
    const c = data.y[i];
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new Error(`${where}: label ${c} of row ${i} is not a class in [0, ${numClasses})`);
  }
}

/** The objective and its gradient (written into grad), float64. */
export function logisticObjective(params: Float64Array, grad: Float64Array, data: Features, K: number, lambda: number): number {
  const D = data.dim, N = data.n, x = data.x;
  grad.fill(0);
  let loss = 0;
  const z = new Float64Array(K);
  for (let i = 0; i < N; i++) {
    let max = -Infinity;
    for (let k = 0; k < K; k++) {
      let s = params[K * D + k];
      for (let d = 0; d < D; d++) s += params[k * D + d] * x[i * D + d];
      z[k] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(z[k] - max);
    const lse = max + Math.log(sum);
    loss += lse - z[data.y[i]];
    for (let k = 0; k < K; k++) {
      const r = (Math.exp(z[k] - lse) - (k === data.y[i] ? 1 : 0)) / N;
      if (r === 0) continue;
      for (let d = 0; d < D; d++) grad[k * D + d] += r * x[i * D + d];
      grad[K * D + k] += r;
    }
  }
  let reg = 0;
  for (let j = 0; j < K * D; j++) {
    reg += params[j] * params[j];
    grad[j] += lambda * params[j];
  }
  return loss / N + 0.5 * lambda * reg;
}

/**
 * The same objective with its two products, W X^T and R X (R the residual softmax - onehot), on
 * the native float32 gemm; the softmax, the sums and the penalty stay float64. On 10^4..10^5 rows
 * it is over ten times faster than the float64 loops, and agrees with them to float32 rounding
 * of the products (~1e-6 relative), which L-BFGS's tolerances do not resolve.
 */
export class GemmObjective {
  private readonly X: Tensor;
  private readonly Xt: Tensor;
  private readonly scores: Float64Array;

  constructor(readonly data: Features, readonly numClasses: number) {
    checkFeatures(data, numClasses);
    this.X = Tensor.from(data.x, [data.n, data.dim], { device: 'cpu' });
    this.Xt = this.X.view([data.dim, data.n], [1, data.dim]);
    this.scores = new Float64Array(numClasses);
  }

  evaluate(params: Float64Array, grad: Float64Array, lambda: number): number {
    const K = this.numClasses, D = this.data.dim, N = this.data.n, y = this.data.y, e = this.scores;
    // Scores as [K, N]: this gemm is faster with the long side as the columns.
    const W = Tensor.from(Float32Array.from(params.subarray(0, K * D)), [K, D], { device: 'cpu' });
    const Z = gemmRaw(W, this.Xt);
    const z = Z.toArraySync() as Float32Array;
    Z.dispose();
    W.dispose();
    // z becomes the residual (softmax - onehot) / N, in place.
    for (let k = 0; k < K; k++) grad[K * D + k] = 0;
    let loss = 0;
    for (let i = 0; i < N; i++) {
      let max = -Infinity;
      for (let k = 0; k < K; k++) {
        e[k] = z[k * N + i] + params[K * D + k];
        if (e[k] > max) max = e[k];
      }
      const c = y[i];
      loss -= e[c] - max;
      let sum = 0;
      for (let k = 0; k < K; k++) sum += (e[k] = Math.exp(e[k] - max));
      loss += Math.log(sum);
      for (let k = 0; k < K; k++) {
        const r = (e[k] / sum - (k === c ? 1 : 0)) / N;
        z[k * N + i] = r;
        grad[K * D + k] += r;
      }
    }
    const R = Tensor.from(z, [K, N], { device: 'cpu' });
    const G = gemmRaw(R, this.X);
    const g = G.toArraySync() as Float32Array;
    G.dispose();
    R.dispose();
    let reg = 0;
    for (let j = 0; j < K * D; j++) {
      reg += params[j] * params[j];
      grad[j] = g[j] + lambda * params[j];
    }
    return loss / N + 0.5 * lambda * reg;
  }

  dispose(): void {
    this.Xt.dispose();
    this.X.dispose();
  }
}

/** Below this many multiply-adds per evaluation (n * dim * classes) the float64 loops are used. */
const GEMM_MIN_WORK = 1 << 20;

export interface FitOptions extends LbfgsOptions {
  /** Starting parameters (a warm start from a neighbouring lambda). */
  init?: Float64Array;
  /** Products on the native gemm (default: when n * dim * classes >= 2^20) or in float64 loops. */
  gemm?: boolean;
}

export function fitLogisticRegression(data: Features, numClasses: number, lambda: number, opts: FitOptions = {}): LogisticRegression {
  checkFeatures(data, numClasses);
  if (!(lambda >= 0) || !Number.isFinite(lambda)) throw new Error(`fitLogisticRegression: lambda must be finite and >= 0, got ${lambda}`);
  const size = numClasses * data.dim + numClasses;
  const x0 = opts.init && opts.init.length === size ? opts.init : new Float64Array(size);
  const useGemm = opts.gemm ?? data.n * data.dim * numClasses >= GEMM_MIN_WORK;
  const fast = useGemm ? new GemmObjective(data, numClasses) : undefined;
  try {
    const fg = fast ? (p: Float64Array, g: Float64Array) => fast.evaluate(p, g, lambda) : (p: Float64Array, g: Float64Array) => logisticObjective(p, g, data, numClasses, lambda);
    const r = minimizeLbfgs(fg, x0, { maxIter: 1000, gradTol: 1e-6, ...opts });
    return new LogisticRegression(r.x, numClasses, data.dim, lambda);
  } finally {
    fast?.dispose();
  }
}
