// The CLIP paper's linear-probe protocol: the L2 strength is chosen on a validation split by a
// parametric search over 1e-6 .. 1e6 that starts from every second decade and halves the interval
// around the best value until it reaches 8 steps per decade; the final classifier is then fitted
// on train + validation with that strength.
import { fitLogisticRegression, type Features, type LogisticRegression } from './logreg.js';

export interface SweepPoint {
  lambda: number;
  valAccuracy: number;
}

export interface SweepResult {
  best: number;
  points: SweepPoint[];
}

export interface SweepOptions {
  /** log10 of the search bounds (default -6 and 6). */
  minExp?: number;
  maxExp?: number;
  /** Steps per decade at the end of the search (default 8). */
  stepsPerDecade?: number;
  maxIter?: number;
}

/** Finds the L2 strength with the best validation accuracy (ties go to the stronger penalty). */
export function sweepLambda(train: Features, val: Features, numClasses: number, opts: SweepOptions = {}): SweepResult {
  const lo = opts.minExp ?? -6, hi = opts.maxExp ?? 6, finest = 1 / (opts.stepsPerDecade ?? 8);
  const done = new Map<number, { acc: number; params: Float64Array }>();
  const key = (e: number) => Math.round(e / finest) * finest;
  const evaluate = (e: number) => {
    e = key(e);
    if (done.has(e) || e < lo - 1e-9 || e > hi + 1e-9) return;
    // Warm start from the nearest strength already fitted.
    let init: Float64Array | undefined, dist = Infinity;
    for (const [k, v] of done) if (Math.abs(k - e) < dist) { dist = Math.abs(k - e); init = v.params; }
    const model = fitLogisticRegression(train, numClasses, 10 ** e, { init, maxIter: opts.maxIter });
    done.set(e, { acc: model.accuracy(val), params: model.params });
  };
  const best = () => [...done.entries()].sort((a, b) => b[1].acc - a[1].acc || b[0] - a[0])[0][0];
  for (let e = hi; e >= lo; e -= 2) evaluate(e);
  for (let step = 1; step >= finest - 1e-12; step /= 2) {
    const b = best();
    evaluate(b - step);
    evaluate(b + step);
  }
  const points = [...done.entries()].sort((a, b) => a[0] - b[0]).map(([e, v]) => ({ lambda: 10 ** e, valAccuracy: v.acc }));
  return { best: 10 ** best(), points };
}

function concat(a: Features, b: Features): Features {
  const x = new Float32Array(a.x.length + b.x.length);
  x.set(a.x);
  x.set(b.x, a.x.length);
  return { x, y: [...Array.from(a.y), ...Array.from(b.y)], n: a.n + b.n, dim: a.dim };
}

export interface ProbeResult {
  lambda: number;
  sweep: SweepPoint[];
  model: LogisticRegression;
  trainAccuracy: number;
  testAccuracy?: number;
}

/** The whole protocol: sweep on (train, val), refit on train + val, score on test. */
export function linearProbe(train: Features, val: Features, numClasses: number, test?: Features, opts: SweepOptions = {}): ProbeResult {
  const sweep = sweepLambda(train, val, numClasses, opts);
  const all = concat(train, val);
  const model = fitLogisticRegression(all, numClasses, sweep.best, { maxIter: opts.maxIter });
  return { lambda: sweep.best, sweep: sweep.points, model, trainAccuracy: model.accuracy(all), testAccuracy: test ? model.accuracy(test) : undefined };
}
