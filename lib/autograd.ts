// A small tape: each differentiable op records a Node (its inputs, the tensors it saved, and a
// backward function that calls native backward kernels). backward() walks the graph once in
// reverse topological order, accumulates parameter gradients, then frees the graph.
import { Tensor, untracked, runRaw, setBackwardImpl, type DType } from './tensor.js';

export interface Node {
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  /** Returns the gradient for each input (null where none is needed). */
  readonly backward: (grad: Tensor) => (Tensor | null)[];
  readonly saved: Tensor[];
}

let gradDisabled = 0;
/** The open GradWatch (see watchGrad, at the end). */
let watch: GradWatch | null = null;

export function isGradEnabled(): boolean {
  return gradDisabled === 0;
}

/** Runs fn without recording any graph. */
export function noGrad<T>(fn: () => T): T {
  gradDisabled++;
  try {
    return fn();
  } finally {
    gradDisabled--;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (watch) for (const t of inputs) if (t && t.requiresGrad) watch.reads.add(t);
  if (gradDisabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

/** Keeps a tensor's storage alive for the backward pass, whatever happens to the tensor itself. */
export function save(t: Tensor): Tensor {
  return untracked(() => t.view(t.shape, t.strides, t.offset));
}

/**
 * Records `out` as produced by an op. `saved` are views made with save(), released with the graph.
 * Call only when needsGrad(...inputs).
 */
export function record(
  out: Tensor,
  name: string,
  inputs: (Tensor | null)[],
  backward: (grad: Tensor) => (Tensor | null)[],
  saved: Tensor[] = [],
): Tensor {
  out.requiresGrad = true;
  out.gradFn = { name, inputs, backward, saved };
  if (watch) watch.made.add(out);
  return out;
}

function addInto(acc: Tensor, g: Tensor): void {
  runRaw('binary', [acc, g], [acc], [0]);
}

function release(t: Tensor): void {
  const node = t.gradFn;
  if (!node) return;
  t.gradFn = null;
  for (const s of node.saved) s.dispose();
}

/**
 * Back-propagates from `root` (a scalar unless `grad` is given). Leaves with requiresGrad get
 * `.grad` (accumulated across calls); the graph is freed afterwards.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error(`backward(): tensor ${root.describe()} does not require grad`);
  if (!grad && root.size !== 1) throw new Error(`backward(): tensor ${root.describe()} is not a scalar; pass a gradient`);
  if (grad && grad.shape.join() !== root.shape.join()) {
    throw new Error(`backward(): gradient ${grad.describe()} does not match ${root.describe()}`);
  }
  untracked(() => {
    // Topological order by depth-first search over the producers.
    const order: Tensor[] = [];
    const seen = new Set<Tensor>();
    const stack: [Tensor, number][] = [[root, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [t, i] = top;
      if (i === 0) {
        if (seen.has(t)) {
          stack.pop();
          continue;
        }
        seen.add(t);
      }
      const inputs = t.gradFn?.inputs ?? [];
      if (i < inputs.length) {
        top[1]++;
        const next = inputs[i];
        if (next && next.requiresGrad && !seen.has(next)) stack.push([next, 0]);
      } else {
        stack.pop();
        order.push(t);
      }
    }
    const grads = new Map<Tensor, Tensor>();
    grads.set(root, grad ? grad.view(grad.shape, grad.strides, grad.offset) : Tensor.ones(root.shape, { device: root.device }));
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k];
      const g = grads.get(t);
      grads.delete(t);
      if (!g) {
        release(t);
        continue;
      }
      const node = t.gradFn;
      if (!node) {
        // A leaf: accumulate into .grad in the leaf's own dtype and layout.
        if (t.grad) {
          addInto(t.grad, g);
          g.dispose();
        } else {
          // .grad is written in place by later accumulation, so it must own its storage.
          const exclusive = g.isContiguous && g.offset === 0 && g.storage.refs === 1 && g.dtype === t.dtype;
          t.grad = exclusive ? g : castCopy(g, t.dtype, true);
        }
        continue;
      }
      const inGrads = node.backward(g);
      g.dispose();
      node.inputs.forEach((inp, i) => {
        const gi = inGrads[i];
        if (!inp || !gi) return;
        if (!inp.requiresGrad) {
          gi.dispose();
          return;
        }
        if (gi.shape.join() !== inp.shape.join()) {
          throw new Error(`backward of ${node.name}: gradient ${gi.describe()} does not match input ${inp.describe()}`);
        }
        const prev = grads.get(inp);
        if (prev) {
          // A fresh sum: gradients may be views sharing storage, so none is written in place.
          const sum = Tensor.empty(inp.shape, { dtype: prev.dtype, device: prev.device });
          runRaw('binary', [prev, gi], [sum], [0]);
          prev.dispose();
          gi.dispose();
          grads.set(inp, sum);
        } else {
          grads.set(inp, gi);
        }
      });
      release(t);
    }
    for (const g of grads.values()) g.dispose();
  });
}

function castCopy(g: Tensor, dtype: DType, disposeSource: boolean): Tensor {
  const out = Tensor.empty(g.shape, { dtype, device: g.device });
  runRaw('copy', [g], [out]);
  if (disposeSource) g.dispose();
  return out;
}

setBackwardImpl(backward);

// --- For activation recomputation (lib/recompute.ts) -----------------------------------------
// A checkpointed function first runs without a graph; to rebuild its graph in the backward pass,
// recompute.ts must know which tensors requiring grad it reads from outside (its inputs, the
// parameters it uses, tensors it captured). While a watch is open, needsGrad() - which every op
// calls with all its tensor inputs - notes those tensors, and record() notes the outputs it makes,
// so reads of the function's own intermediates can be told apart from outside reads.

export interface GradWatch {
  /** Tensors requiring grad that an op was given. */
  readonly reads: Set<Tensor>;
  /** Tensors recorded as op outputs (only with grad enabled). */
  readonly made: Set<Tensor>;
}

/** Runs fn with `into` open as the watch (a nested watch sees only its own calls); fills it even if fn throws. */
export function watchGrad<T>(into: GradWatch, fn: () => T, opts: { grad: boolean }): T {
  const prev = watch, prevDisabled = gradDisabled;
  watch = into;
  // The recomputation must record even when backward() is called inside noGrad().
  gradDisabled = opts.grad ? 0 : prevDisabled + 1;
  try {
    return fn();
  } finally {
    watch = prev;
    gradDisabled = prevDisabled;
  }
}
