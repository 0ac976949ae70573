// Inference products with weights packed once. The CPU gemm packs its right-hand operand into the
// micro-kernel's layout on every call; with one image's 50 tokens that costs up to a third of the
// product. Outside autograd a weight is packed on first use (gemm_pack_b) and the copy is reused
// until the weight is written again: the copy hangs off the weight's storage, which drops it on
// any write and frees it with itself. The price is a second copy of each weight used this way.
import { Tensor, runRaw } from '../tensor.js';

let enabled = process.env.TSCLIP_PACK_WEIGHTS !== '0';

/** Turns reuse of packed weights on or off (TSCLIP_PACK_WEIGHTS=0 starts with it off). */
export function setWeightPacking(on: boolean): void {
  enabled = on;
}
export function weightPacking(): boolean {
  return enabled;
}

/** The widest CPU micro-tile: the packed buffer is sized for it on every machine. */
const PACK_COLUMNS = 32;

/** @internal w's packed copy for the current contents of its storage (made on first use). */
export function packedWeight(w: Tensor): Tensor {
  const [outF, inF] = w.shape;
  const key = `linear ${w.offset} ${w.shape.join(',')} ${w.strides.join(',')}`;
  return w.storage.derived(key, () => {
    const packed = Tensor.empty([inF * Math.ceil(outF / PACK_COLUMNS) * PACK_COLUMNS], { device: w.device });
    const wt = w.view([inF, outF], [w.strides[1], w.strides[0]], w.offset);
    try {
      runRaw('gemm_pack_b', [wt], [packed]);
    } finally {
      wt.dispose();
    }
    return packed;
  });
}

/**
 * act(x2 @ wᵀ + b) for x2 [rows, in] contiguous and w [out, in], through w's packed copy; null
 * when packing does not apply (off, not the CPU, not float32), and the caller multiplies as usual.
 */
export function linearPacked(x2: Tensor, w: Tensor, b: Tensor | null, act: number): Tensor | null {
  if (!enabled || w.device !== 'cpu' || w.dtype !== 'float32' || x2.dtype !== 'float32') return null;
  if (b && (b.dtype !== 'float32' || b.strides[0] !== 1)) return null;
  const y = Tensor.empty([x2.shape[0], w.shape[0]], { device: w.device });
  try {
    runRaw('gemm_packed', [x2, packedWeight(w), b], [y], [0, act], [1]);
  } catch (e) {
    y.dispose();
    throw e;
  }
  return y;
}
