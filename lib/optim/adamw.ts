// AdamW (torch.optim.AdamW): Adam with decoupled weight decay, one native fused update per
// parameter. Parameter groups carry their own lr and weight decay; set `optimizer.groups[i].lr`
// from a schedule before each step().
import { Tensor, keep, runRaw } from '../tensor.js';

export interface ParamGroupInput {
  params: Tensor[];
  lr?: number;
  weightDecay?: number;
}

export interface ParamGroup {
  readonly params: readonly Tensor[];
  lr: number;
  weightDecay: number;
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** The optimizer's state as plain data: per parameter (in group order) its step count and moments. */
export interface AdamWStateDict {
  groups: { lr: number; weightDecay: number; size: number }[];
  betas: [number, number];
  eps: number;
  /** null for a parameter that has not been updated yet. */
  params: ({ step: number; m: Float32Array; v: Float32Array } | null)[];
}

interface ParamState {
  step: number;
  m: Tensor;
  v: Tensor;
}

function fail(why: string): never {
  throw new Error(`AdamW: ${why}`);
}

function checkNumber(name: string, x: number, ok: (x: number) => boolean): number {
  if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) fail(`invalid ${name}: ${x}`);
  return x;
}

export class AdamW {
  readonly groups: ParamGroup[];
  betas: [number, number];
  eps: number;
  private readonly state = new Map<Tensor, ParamState>();

  constructor(params: Tensor[] | ParamGroupInput[], opts: AdamWOptions = {}) {
    const lr = checkNumber('lr', opts.lr ?? 1e-3, (x) => x >= 0);
    const wd = checkNumber('weightDecay', opts.weightDecay ?? 1e-2, (x) => x >= 0);
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    checkNumber('beta1', b1, (x) => x >= 0 && x < 1);
    checkNumber('beta2', b2, (x) => x >= 0 && x < 1);
    this.betas = [b1, b2];
    this.eps = checkNumber('eps', opts.eps ?? 1e-8, (x) => x >= 0);
    if (!Array.isArray(params)) fail('params must be an array of tensors or of parameter groups');
    const inputs: ParamGroupInput[] = params.length && params[0] instanceof Tensor
      ? [{ params: params as Tensor[] }]
      : (params as ParamGroupInput[]);
    const seen = new Set<Tensor>();
    this.groups = inputs.map((g, gi) => {
      if (!g || !Array.isArray(g.params)) fail(`group ${gi} has no params array`);
      g.params.forEach((p, pi) => {
        if (!(p instanceof Tensor)) fail(`group ${gi} parameter ${pi} is not a Tensor`);
        if (p.dtype !== 'float32') fail(`group ${gi} parameter ${pi} must be float32, got ${p.describe()}`);
        if (!p.isContiguous) fail(`group ${gi} parameter ${pi} ${p.describe()} must be contiguous`);
        if (seen.has(p)) fail(`group ${gi} parameter ${pi} ${p.describe()} appears more than once`);
        seen.add(p);
      });
      return {
        params: [...g.params],
        lr: checkNumber(`lr of group ${gi}`, g.lr ?? lr, (x) => x >= 0),
        weightDecay: checkNumber(`weightDecay of group ${gi}`, g.weightDecay ?? wd, (x) => x >= 0),
      };
    });
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    const [b1, b2] = this.betas;
    this.groups.forEach((g, gi) => {
      checkNumber(`lr of group ${gi}`, g.lr, (x) => x >= 0);
      checkNumber(`weightDecay of group ${gi}`, g.weightDecay, (x) => x >= 0);
      for (const p of g.params) {
        const grad = p.grad;
        if (!grad) continue;
        if (grad.shape.join() !== p.shape.join()) fail(`gradient ${grad.describe()} does not match parameter ${p.describe()}`);
        let st = this.state.get(p);
        if (!st) {
          st = { step: 0, m: keep(Tensor.zeros(p.shape, { device: p.device })), v: keep(Tensor.zeros(p.shape, { device: p.device })) };
          this.state.set(p, st);
        }
        st.step++;
        const bc1 = 1 - b1 ** st.step, bc2 = 1 - b2 ** st.step;
        const gc = grad.isContiguous && grad.dtype === 'float32' ? grad : (() => {
          const c = Tensor.empty(grad.shape, { device: grad.device });
          runRaw('copy', [grad], [c]);
          return c;
        })();
        try {
          runRaw('adamw', [gc], [p, st.m, st.v], [], [g.lr, b1, b2, this.eps, g.weightDecay, bc1, bc2]);
        } finally {
          if (gc !== grad) gc.dispose();
        }
      }
    });
  }

  /** Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const g of this.groups) {
      for (const p of g.params) {
        if (p.grad) {
          p.grad.dispose();
          p.grad = null;
        }
      }
    }
  }

  stateDict(): AdamWStateDict {
    const params: AdamWStateDict['params'] = [];
    for (const g of this.groups) {
      for (const p of g.params) {
        const st = this.state.get(p);
        params.push(st ? { step: st.step, m: st.m.toArraySync() as Float32Array, v: st.v.toArraySync() as Float32Array } : null);
      }
    }
    return {
      groups: this.groups.map((g) => ({ lr: g.lr, weightDecay: g.weightDecay, size: g.params.length })),
      betas: [this.betas[0], this.betas[1]],
      eps: this.eps,
      params,
    };
  }

  /** Restores a stateDict() taken from an optimizer over parameters of the same shapes, in the same groups. */
  loadStateDict(sd: AdamWStateDict): void {
    if (!sd || !Array.isArray(sd.groups) || !Array.isArray(sd.params)) fail('loadStateDict: not an AdamW state dict');
    if (sd.groups.length !== this.groups.length) {
      fail(`loadStateDict: the state has ${sd.groups.length} parameter groups, the optimizer ${this.groups.length}`);
    }
    sd.groups.forEach((g, i) => {
      if (g.size !== this.groups[i].params.length) {
        fail(`loadStateDict: group ${i} has ${g.size} parameters in the state, ${this.groups[i].params.length} in the optimizer`);
      }
    });
    const all = this.groups.flatMap((g) => g.params);
    if (sd.params.length !== all.length) fail(`loadStateDict: ${sd.params.length} parameter states for ${all.length} parameters`);
    sd.params.forEach((s, i) => {
      if (!s) return;
      if (!(s.m instanceof Float32Array) || s.m.length !== all[i].size || !(s.v instanceof Float32Array) || s.v.length !== all[i].size) {
        fail(`loadStateDict: the moments of parameter ${i} do not match its ${all[i].size} elements (${all[i].describe()})`);
      }
      if (!Number.isInteger(s.step) || s.step < 1) fail(`loadStateDict: parameter ${i} has step ${s.step}`);
    });
    if (!Array.isArray(sd.betas) || sd.betas.length !== 2) fail('loadStateDict: betas must be [beta1, beta2]');
    checkNumber('beta1', sd.betas[0], (x) => x >= 0 && x < 1);
    checkNumber('beta2', sd.betas[1], (x) => x >= 0 && x < 1);
    checkNumber('eps', sd.eps, (x) => x >= 0);
    for (const st of this.state.values()) {
      st.m.dispose();
      st.v.dispose();
    }
    this.state.clear();
    sd.params.forEach((s, i) => {
      if (!s) return;
      const p = all[i];
      this.state.set(p, {
        step: s.step,
        m: keep(Tensor.from(s.m.slice(), p.shape, { device: p.device })),
        v: keep(Tensor.from(s.v.slice(), p.shape, { device: p.device })),
      });
    });
    sd.groups.forEach((g, i) => {
      this.groups[i].lr = g.lr;
      this.groups[i].weightDecay = g.weightDecay;
    });
    this.betas = [sd.betas[0], sd.betas[1]];
    this.eps = sd.eps;
  }

  /** Frees the moment buffers. */
  dispose(): void {
    for (const st of this.state.values()) {
      st.m.dispose();
      st.v.dispose();
    }
    this.state.clear();
  }
}
