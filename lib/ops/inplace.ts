// In-place writes outside autograd: initialisation, loading and optimiser bookkeeping.
import { Tensor, runRaw } from '../tensor.js';

export function fill(t: Tensor, value: number): void {
  if (!t.isContiguous) throw new Error(`fill: tensor ${t.describe()} is not contiguous`);
  runRaw('fill', [], [t], [], [value]);
}
export const fillZero = (t: Tensor): void => fill(t, 0);

/** Overwrites t with host values (same element count). */
export function fillFrom(t: Tensor, values: Float32Array | Int32Array | Uint8Array): void {
  if (values.length !== t.size) throw new Error(`fillFrom: ${values.length} values for ${t.describe()}`);
  const direct = (t.dtype === 'float32' && values instanceof Float32Array) || (t.dtype === 'int32' && values instanceof Int32Array) || (t.dtype === 'uint8' && values instanceof Uint8Array);
  if (direct && t.isContiguous) {
    t.storage.write(t.offset * values.BYTES_PER_ELEMENT, values);
    return;
  }
  const src = Tensor.from(values, t.shape, { device: t.device, dtype: t.dtype === 'bfloat16' ? 'bfloat16' : undefined });
  runRaw('copy', [src], [t]);
  src.dispose();
}

/** dst <- src (shapes equal; casts between dtypes). */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.shape.join() !== src.shape.join()) throw new Error(`copyInto: ${src.describe()} into ${dst.describe()}`);
  runRaw('copy', [src], [dst]);
}
