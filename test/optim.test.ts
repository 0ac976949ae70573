// AdamW against a float64 transcription of torch.optim.AdamW (two groups, a learning-rate change,
// state save/load) and its argument checks.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../lib/tensor.js';
import { AdamW } from '../lib/optim/adamw.js';
import { expectClose, randArray, tensor, toF64, DEVICE } from './helpers.js';

interface RefParam {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
  step: number;
}

/** One torch.optim.AdamW step (amsgrad=False, maximize=False) in float64. */
function refStep(s: RefParam, g: ArrayLike<number>, lr: number, wd: number, b1: number, b2: number, eps: number): void {
  s.step++;
  const bc1 = 1 - b1 ** s.step, bc2 = 1 - b2 ** s.step;
  const stepSize = lr / bc1, bc2Sqrt = Math.sqrt(bc2);
  for (let i = 0; i < s.p.length; i++) {
    s.p[i] *= 1 - lr * wd;
    s.m[i] += (g[i] - s.m[i]) * (1 - b1);
    s.v[i] = s.v[i] * b2 + (1 - b2) * g[i] * g[i];
    const denom = Math.sqrt(s.v[i]) / bc2Sqrt + eps;
    s.p[i] -= stepSize * (s.m[i] / denom);
  }
}

function setGrad(p: Tensor, g: Float64Array): void {
  p.grad?.dispose();
  p.grad = tensor(g, [...p.shape]);
}

describe('AdamW', () => {
  it('matches PyTorch AdamW for 3 steps with a decay and a no-decay group and a changing lr', () => {
    const shapes = [[3, 5], [7], [2, 2, 3], []];
    const init = shapes.map((s, i) => randArray(s.reduce((a, b) => a * b, 1), 10 + i));
    const params = shapes.map((s, i) => tensor(init[i], s, true));
    const opt = new AdamW(
      [{ params: [params[0], params[2]] }, { params: [params[1], params[3]], weightDecay: 0, lr: 3e-3 }],
      { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1 },
    );
    const ref: RefParam[] = init.map((p) => ({ p: p.slice(), m: new Float64Array(p.length), v: new Float64Array(p.length), step: 0 }));
    const groupOf = [0, 1, 0, 1];
    for (let step = 0; step < 3; step++) {
      if (step === 2) opt.groups[0].lr = 5e-3; // a schedule sets the lr between steps
      const lrs = [opt.groups[0].lr, opt.groups[1].lr];
      const wds = [0.1, 0];
      params.forEach((p, i) => {
        // Gradients of mixed magnitudes, including one far below eps.
        const g = randArray(p.size, 100 * step + i, -2, 2).map((x, k) => Math.fround(k === 0 ? x * 1e-9 : x));
        setGrad(p, g);
        refStep(ref[i], g, lrs[groupOf[i]], wds[groupOf[i]], 0.9, 0.95, 1e-6);
      });
      opt.step();
      params.forEach((p, i) => expectClose(toF64(p), ref[i].p, 2e-6, `step ${step + 1} param ${i}`));
    }
    const sd = opt.stateDict();
    // The state lists parameters group by group.
    [0, 2, 1, 3].forEach((i, k) => {
      const s = sd.params[k]!;
      expect(s.step).toBe(3);
      expectClose(s.m, ref[i].m, 1e-5, `m of param ${i}`);
      expectClose(s.v, ref[i].v, 1e-5, `v of param ${i}`);
    });
    opt.dispose();
  });

  it('takes a plain list of parameters, skips parameters without gradients, and zeroGrad clears them', () => {
    const a = tensor([1, 2, 3], [3], true), b = tensor([4, 5], [2], true);
    const opt = new AdamW([a, b], { lr: 0.1 });
    expect(opt.groups).toHaveLength(1);
    expect(opt.groups[0].weightDecay).toBe(0.01);
    setGrad(a, Float64Array.of(1, -1, 0.5));
    opt.step();
    const ref: RefParam = { p: Float64Array.of(1, 2, 3), m: new Float64Array(3), v: new Float64Array(3), step: 0 };
    refStep(ref, [1, -1, 0.5], 0.1, 0.01, 0.9, 0.999, 1e-8);
    expectClose(toF64(a), ref.p, 1e-6);
    expect(Array.from(toF64(b))).toEqual([4, 5]);
    expect(opt.stateDict().params[1]).toBeNull();
    opt.zeroGrad();
    expect(a.grad).toBeNull();
    opt.dispose();
  });

  it('saves and restores its state (the restored optimizer continues identically)', () => {
    const init = [randArray(6, 1), randArray(4, 2)];
    const make = () => init.map((x, i) => tensor(x, i === 0 ? [2, 3] : [4], true));
    const grads = [0, 1, 2].map((s) => init.map((x, i) => randArray(x.length, 50 + 10 * s + i)));
    const pa = make();
    const a = new AdamW([{ params: [pa[0]] }, { params: [pa[1]], weightDecay: 0 }], { lr: 0.05 });
    for (let s = 0; s < 2; s++) {
      pa.forEach((p, i) => setGrad(p, grads[s][i]));
      a.step();
    }
    a.groups[1].lr = 0.02;
    const sd = a.stateDict();
    // A second optimizer on parameters holding the same values.
    const pb = pa.map((p) => tensor(toF64(p), [...p.shape], true));
    const b = new AdamW([{ params: [pb[0]] }, { params: [pb[1]] }], { lr: 1, weightDecay: 0.5 });
    b.loadStateDict(sd);
    expect(b.groups.map((g) => [g.lr, g.weightDecay])).toEqual([[0.05, 0.01], [0.02, 0]]);
    pa.forEach((p, i) => setGrad(p, grads[2][i]));
    pb.forEach((p, i) => setGrad(p, grads[2][i]));
    a.step();
    b.step();
    pa.forEach((p, i) => expect(Array.from(toF64(pb[i]))).toEqual(Array.from(toF64(p))));
    a.dispose();
    b.dispose();
  });

  it('rejects bad arguments and mismatched state', () => {
    const p = tensor([1, 2], [2], true);
    expect(() => new AdamW([p, p])).toThrow(/AdamW: group 0 parameter 1 float32\[2\] appears more than once/);
    expect(() => new AdamW([Tensor.zeros([2], { dtype: 'bfloat16', device: DEVICE })])).toThrow(/AdamW: group 0 parameter 0 must be float32, got bfloat16\[2\]/);
    expect(() => new AdamW([p], { lr: -1 })).toThrow(/AdamW: invalid lr: -1/);
    expect(() => new AdamW([p], { betas: [0.9, 1] })).toThrow(/AdamW: invalid beta2: 1/);
    const opt = new AdamW([p]);
    setGrad(p, Float64Array.of(1, 1));
    opt.step();
    const sd = opt.stateDict();
    const other = new AdamW([tensor([1, 2, 3], [3], true)]);
    expect(() => other.loadStateDict(sd)).toThrow(/AdamW: loadStateDict: the moments of parameter 0 do not match its 3 elements/);
    expect(() => new AdamW([{ params: [tensor([1], [1])] }, { params: [tensor([2], [1])] }]).loadStateDict(sd)).toThrow(/AdamW: loadStateDict: the state has 1 parameter groups, the optimizer 2/);
    opt.groups[0].lr = Number.NaN;
    expect(() => opt.step()).toThrow(/AdamW: invalid lr of group 0: NaN/);
  });
});
