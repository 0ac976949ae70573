// Modules are plain classes holding parameters, buffers and child modules under the names of the
// original checkpoints, so a state dict is a walk and loading is a lookup.
import { Tensor, keep, type Device } from '../tensor.js';

export abstract class Module {
  training = true;
  private readonly params_ = new Map<string, Tensor>();
  private readonly buffers_ = new Map<string, Tensor>();
  private readonly children_ = new Map<string, Module>();

  /** Registers a trainable parameter (kept alive outside any tidy scope). */
  protected param(name: string, t: Tensor): Tensor {
    keep(t);
    t.requiresGrad = true;
    this.params_.set(name, t);
    return t;
  }
  /** Registers a non-trainable state tensor (BatchNorm running statistics). */
  protected buffer(name: string, t: Tensor): Tensor {
    keep(t);
    this.buffers_.set(name, t);
    return t;
  }
  protected child<M extends Module>(name: string, m: M): M {
    this.children_.set(name, m);
    return m;
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, v] of this.params_) out.push([prefix + k, v]);
    for (const [k, c] of this.children_) out.push(...c.namedParameters(`${prefix}${k}.`));
    return out;
  }
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }
  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, v] of this.buffers_) out.push([prefix + k, v]);
    for (const [k, c] of this.children_) out.push(...c.namedBuffers(`${prefix}${k}.`));
    return out;
  }
  /** Parameters and buffers by their checkpoint names. */
  stateDict(): Map<string, Tensor> {
    return new Map([...this.namedParameters(), ...this.namedBuffers()]);
  }
  modules(): Module[] {
    return [this, ...[...this.children_.values()].flatMap((c) => c.modules())];
  }

  /** Replaces a parameter or buffer's values in place (same shape); used by loaders and optimisers' tests. */
  setTensor(name: string, values: Float32Array): void {
    const t = this.stateDict().get(name);
    if (!t) throw new Error(`no parameter or buffer named "${name}"`);
    if (t.size !== values.length) throw new Error(`"${name}": expected ${t.size} values for ${t.describe()}, got ${values.length}`);
    if (t.dtype !== 'float32' || !t.isContiguous) throw new Error(`"${name}": only contiguous float32 tensors can be set`);
    t.storage.write(t.offset * 4, values);
  }

  train(on = true): this {
    for (const m of this.modules()) m.training = on;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  get device(): Device {
    const p = this.namedParameters()[0];
    return p ? p[1].device : 'cpu';
  }

  dispose(): void {
    for (const [, t] of this.stateDict()) t.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Children named 0, 1, 2, ... (as nn.Sequential / nn.ModuleList name them). */
export class ModuleList<M extends Module> extends Module {
  readonly items: M[] = [];
  push(m: M): M {
    this.child(String(this.items.length), m);
    this.items.push(m);
    return m;
  }
}
