// Row gathers: embedding lookup and picking rows (the end-of-text token, the class token).
import { Tensor, copyContiguous, keep, runRaw } from '../tensor.js';
import { contiguous } from './shape.js';
import { needsGrad, record, save } from '../autograd.js';
import { check, checkDtype, checkRank, checkSameDevice, checkTensor } from './util.js';

/** table [V, D], ids int32 [...] -> [..., D] */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  checkTensor('embedding', 'table', table);
  checkTensor('embedding', 'ids', ids);
  checkRank('embedding', 'table', table, 2);
  checkDtype('embedding', 'ids', ids, 'int32');
  checkSameDevice('embedding', table, ids);
  check('embedding', table.isContiguous, 'table must be contiguous');
  const idc = ids.isContiguous ? ids : (() => {
    const c = Tensor.empty(ids.shape, { dtype: 'int32', device: ids.device });
    runRaw('copy', [ids], [c]);
    return c;
  })();
  const D = table.shape[1];
  const out = Tensor.empty([...ids.shape, D], { dtype: table.dtype, device: table.device });
  runRaw('gather_rows', [table, idc], [out]);
  if (!needsGrad(table)) {
    if (idc !== ids) idc.dispose();
    return out;
  }
  const sid = idc === ids ? save(ids) : keep(idc);
  const V = table.shape[0];
  return record(out, 'embedding', [table, null], (g) => {
    const gc = g.isContiguous ? g : (() => {
      const c = Tensor.empty(g.shape, { device: g.device });
      runRaw('copy', [g], [c]);
      return c;
    })();
    const dt = Tensor.zeros([V, D], { device: g.device });
    runRaw('scatter_add_rows', [gc, sid], [dt]);
    if (gc !== g) gc.dispose();
    return [dt, null];
  }, [sid]);
}

/** Rows of x [N, D] at idx int32 [M] -> [M, D]. */
export function gatherRows(x: Tensor, idx: Tensor): Tensor {
  checkTensor('gatherRows', 'input', x);
  checkRank('gatherRows', 'input', x, 2);
  const xc = contiguous(x);
  const out = embedding(xc, idx);
  if (xc !== x) xc.dispose();
  return out;
}

/** Index of the largest value along the last dimension of a 2-D tensor (int32, no gradient). */
export function argmax(x: Tensor): Tensor {
  checkTensor('argmax', 'input', x);
  checkRank('argmax', 'input', x, 2);
  checkDtype('argmax', 'input', x, 'float32', 'int32');
  const src = x.isContiguous ? x : copyContiguous(x);
  const out = Tensor.empty([x.shape[0]], { dtype: 'int32', device: x.device });
  runRaw('argmax_last', [src], [out]);
  if (src !== x) src.dispose();
  return out;
}
