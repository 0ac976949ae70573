// Activation recomputation (gradient checkpointing). checkpoint(fn, ...inputs) runs fn, frees the
// graph it recorded at once and keeps only its inputs; when the backward pass reaches the result it
// reruns fn with grad on, back-propagates the incoming gradient through that fresh graph, hands the
// input gradients on and frees the graph. Memory: one function's activations at a time instead of
// all of them, for one more forward of fn per backward.
//
// The first run records (and drops) its graph rather than running under noGrad: without grad some
// ops take inference paths (the activation fused into the GEMM, packed weights) that differ in the
// last bits and pack a copy of each weight; recording keeps results bit-identical to training
// without checkpointing, at the same peak memory (the backward's recomputation holds as much).
//
// fn must compute the same values from the same tensors both times: no random numbers (CLIP has no
// dropout), no state it changes in place, unless listed in `preserve` (BatchNorm running statistics:
// see CheckpointOptions). Tensors it reads from outside other than its inputs and parameters must
// stay alive until backward. The recomputation runs inside the backward pass, where tidy() scopes
// collect nothing: fn must dispose its own temporaries, as every module's forward does (the ones in
// the recomputed graph are disposed here anyway).
import { Tensor, copyContiguous, runRaw } from './tensor.js';
import { backward as backpropagate, isGradEnabled, needsGrad, record, save, watchGrad, type GradWatch } from './autograd.js';
import { autocast, currentPrecision } from './amp.js';
import type { Module } from './nn/module.js';
import { BatchNorm2d } from './nn/layers.js';

export interface CheckpointOptions {
  /** Tensors fn updates in place: copied before the recomputation and restored after it, so they change once. */
  preserve?: readonly Tensor[];
  /** The module fn runs: the running statistics of its BatchNorm layers in training mode are preserved. */
  module?: Module;
}

export type CheckpointFn = (...inputs: Tensor[]) => Tensor;

/** fn(...inputs), its activations recomputed in the backward pass instead of kept (see the file comment). */
export function checkpoint(fn: CheckpointFn, ...inputs: Tensor[]): Tensor {
  return checkpointWith({}, fn, ...inputs);
}

/** checkpoint() with options (state that fn updates in place). */
export function checkpointWith(opts: CheckpointOptions, fn: CheckpointFn, ...inputs: Tensor[]): Tensor {
  if (typeof fn !== 'function') throw new Error(`checkpoint: fn must be a function, got ${typeof fn}`);
  inputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new Error(`checkpoint: input ${i} must be a Tensor, got ${describeValue(t)}`);
  });
  if (!isGradEnabled()) return checkOutput(fn(...inputs), 'fn');
  const precision = currentPrecision();
  const seen = newWatch();
  let out: Tensor;
  try {
    out = watchGrad(seen, () => checkOutput(fn(...inputs), 'fn'), { grad: true });
  } finally {
    releaseGraph(seen);
  }
  const inputSet = new Set(inputs);
  // Parameters and captured tensors requiring grad: what fn's ops read and did not make.
  const captured = [...seen.reads].filter((t) => !inputSet.has(t) && !seen.made.has(t));
  if (!captured.length && !inputs.some((t) => t.requiresGrad)) return out;
  // Recording on one of fn's inputs would overwrite the gradFn it already has.
  if (inputSet.has(out) || (seen.reads.has(out) && !seen.made.has(out))) out = out.view(out.shape, out.strides, out.offset);
  const preserve = [...(opts.preserve ?? []), ...(opts.module ? batchNormState(opts.module) : [])];
  const saved = inputs.map((t) => save(t));
  const shape = out.shape.join();
  needsGrad(...inputs, ...captured); // lets an enclosing recomputation see these reads
  return record(out, 'checkpoint', [...inputs, ...captured], (g) =>
    recomputeBackward(fn, inputs, saved, captured, preserve, precision, shape, g), saved);
}

/** The running statistics that a forward in training mode updates. */
function batchNormState(m: Module): Tensor[] {
  const out: Tensor[] = [];
  for (const b of m.modules()) if (b instanceof BatchNorm2d && b.training && !b.frozen) out.push(b.runningMean, b.runningVar);
  return out;
}

interface Stash {
  gradFn: Tensor['gradFn'];
  grad: Tensor | null;
}

function recomputeBackward(
  fn: CheckpointFn, inputs: Tensor[], saved: Tensor[], captured: Tensor[], preserve: Tensor[],
  precision: ReturnType<typeof currentPrecision>, shape: string, g: Tensor,
): (Tensor | null)[] {
  // The recomputed graph must end at fn's outside tensors: each becomes a leaf for the duration
  // (its gradFn, which belongs to the outer graph, is put back after), and its .grad collects this
  // function's contribution only. The inputs are rerun from the views saved in the forward, as the
  // caller may have disposed them; the originals are stashed too in case fn also reads them by closure.
  for (const t of captured) {
    if (t.disposed) throw new Error(`checkpoint: fn reads a tensor ${t.describe()} (not one of its inputs) that was disposed before backward; pass it as an input`);
  }
  const leaves = saved.map((s, i) => {
    s.requiresGrad = inputs[i].requiresGrad;
    return s;
  });
  const stash = new Map<Tensor, Stash>();
  for (const t of [...captured, ...inputs]) {
    if (stash.has(t) || t.disposed) continue;
    stash.set(t, { gradFn: t.gradFn, grad: t.grad });
    t.gradFn = null;
    t.grad = null;
  }
  const rerun = newWatch();
  const contributions = new Map<Tensor, Tensor | null>();
  try {
    autocast(precision, () => {
      const snaps = preserve.map((t) => copyContiguous(t));
      try {
        const out = watchGrad(rerun, () => checkOutput(fn(...leaves), 'fn (recomputed)'), { grad: true });
        const known = new Set<Tensor>([...leaves, ...stash.keys()]);
        const stray = [...rerun.reads].filter((t) => !rerun.made.has(t) && !known.has(t));
        if (stray.length) {
          throw new Error(`checkpoint: the recomputation read ${stray.length} tensor(s) requiring grad that the first run did not (${stray.slice(0, 3).map((t) => t.describe()).join(', ')}); fn must use the same tensors both times`);
        }
        if (out.shape.join() !== shape) {
          throw new Error(`checkpoint: the recomputation returned ${out.describe()}, the first run [${shape}]; fn must compute the same thing both times`);
        }
        if (out.requiresGrad) backpropagate(out, g);
      } finally {
        preserve.forEach((t, i) => {
          runRaw('copy', [snaps[i]], [t]);
          snaps[i].dispose();
        });
      }
    });
  } finally {
    for (const [t, st] of stash) {
      contributions.set(t, t.grad);
      t.grad = st.grad;
      t.gradFn = st.gradFn;
    }
    releaseGraph(rerun);
    for (const t of rerun.made) t.dispose(); // the recomputed activations, fn's output included
  }
  // Gradients in the order of the node's inputs: [...inputs, ...captured].
  const grads: (Tensor | null)[] = inputs.map((t, i) => {
    const leafGrad = leaves[i].grad;
    leaves[i].grad = null; // the saved view is disposed with the graph, which would dispose its .grad
    const viaClosure = inputs.indexOf(t) === i ? takeContribution(contributions, t) : null;
    return sum(leafGrad, viaClosure);
  });
  for (const t of captured) grads.push(takeContribution(contributions, t));
  for (const c of contributions.values()) c?.dispose(); // captured-and-input duplicates already taken
  return grads;
}

function newWatch(): GradWatch {
  return { reads: new Set(), made: new Set() };
}

function takeContribution(m: Map<Tensor, Tensor | null>, t: Tensor): Tensor | null {
  const c = m.get(t) ?? null;
  m.delete(t);
  return c;
}

function sum(a: Tensor | null, b: Tensor | null): Tensor | null {
  if (!a || !b) return a ?? b;
  const out = Tensor.empty(a.shape, { dtype: a.dtype, device: a.device });
  runRaw('binary', [a, b], [out], [0]);
  a.dispose();
  b.dispose();
  return out;
}

/** Frees the nodes a watched run recorded (those backward did not already free) and what they saved. */
function releaseGraph(w: GradWatch): void {
  for (const t of w.made) {
    const node = t.gradFn;
    t.gradFn = null;
    t.requiresGrad = false;
    if (node) for (const s of node.saved) s.dispose();
  }
}

function checkOutput(v: unknown, what: string): Tensor {
  if (!(v instanceof Tensor)) throw new Error(`checkpoint: ${what} must return one Tensor, got ${describeValue(v)}`);
  if (v.disposed) throw new Error(`checkpoint: ${what} returned a disposed tensor ${v.describe()}`);
  return v;
}

function describeValue(v: unknown): string {
  if (v instanceof Tensor) return v.describe();
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return v === null ? 'null' : typeof v;
}
