// Mixed precision (like torch.autocast): inside autocast('bf16', fn), matmul and linear multiply
// bfloat16 copies of their float32 operands with float32 accumulation and return float32, in the
// forward and in their backward. Everything else (norms, softmax, attention, losses) stays float32,
// the weights stay float32 masters, and their gradients come out of the GEMM in float32.
import { Tensor, copyContiguous, untracked, type DType } from './tensor.js';

export type Precision = 'fp32' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];

interface Scope {
  precision: Precision;
  /** bf16 copies of parameters by identity, with the storage version they were cast at; freed on exit. */
  cache: Map<Tensor, { copy: Tensor; version: number }>;
}
const scopes: Scope[] = [];

/** Throws a clear Error unless p is a known precision; returns it typed. */
export function checkPrecision(where: string, p: unknown): Precision {
  if (!PRECISIONS.includes(p as Precision)) {
    throw new Error(`${where}: precision must be ${PRECISIONS.map((x) => `'${x}'`).join(' or ')}, got ${typeof p === 'string' ? `'${p}'` : String(p)}`);
  }
  return p as Precision;
}

/**
 * Runs fn with matmul/linear operands in `precision` ('bf16': bfloat16 inputs, float32 accumulation
 * and outputs; 'fp32': plain float32, e.g. to turn it off inside a bf16 region). Synchronous
 * functions only. Parameters are cast once per scope (again after an in-place write), so wrap at
 * least a whole forward pass.
 */
export function autocast<T>(precision: Precision, fn: () => T): T {
  checkPrecision('autocast', precision);
  if (typeof fn !== 'function') throw new Error(`autocast: fn must be a function, got ${typeof fn}`);
  const scope: Scope = { precision, cache: new Map() };
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
    for (const e of scope.cache.values()) e.copy.dispose();
  }
  if (result instanceof Promise) throw new Error('autocast: the function must be synchronous (it returned a Promise)');
  return result;
}

/** The precision matmul and linear use right now ('fp32' outside any autocast). */
export function currentPrecision(): Precision {
  return scopes.length ? scopes[scopes.length - 1].precision : 'fp32';
}

/** The dtype matmul/linear cast float32 operands to, or null when they run as they are. */
export function autocastDtype(): DType | null {
  return currentPrecision() === 'bf16' ? 'bfloat16' : null;
}

/**
 * t as a contiguous bfloat16 tensor for a GEMM operand: a new tensor the caller owns (dispose it or
 * keep it for backward). A parameter (a leaf that requires grad) is converted once per autocast
 * scope and the copy shared; the caller gets its own view of it either way.
 */
export function castOperand(t: Tensor): Tensor {
  const scope = scopes[scopes.length - 1];
  if (scope && t.requiresGrad && !t.gradFn) {
    const version = t.storage.version;
    let e = scope.cache.get(t);
    if (e && e.version !== version) {
      e.copy.dispose(); // written in place since: views saved for backward keep the old values
      e = undefined;
    }
    if (!e) {
      // Outside every tidy scope: the autocast scope owns it and frees it on exit.
      e = { copy: untracked(() => copyContiguous(t, 'bfloat16')), version };
      scope.cache.set(t, e);
    }
    return e.copy.view(e.copy.shape, e.copy.strides, e.copy.offset);
  }
  return copyContiguous(t, 'bfloat16'); // rounded to nearest even
}
