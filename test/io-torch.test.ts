import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readCheckpoint } from '../lib/io/checkpoint.js';
import { configFromOpenAI } from '../lib/io/config.js';
import { castFloat, fromFloat32, rawTensor, toFloat32, toInt32, type RawTensor } from '../lib/io/raw.js';
import { readSafetensors } from '../lib/io/safetensors.js';
import { readTorchArchive } from '../lib/io/torch.js';
import { writeZip, type ZipInput } from '../lib/io/zip.js';
import {
  FIXTURES,
  Global,
  HAVE_FIXTURES,
  HAVE_PYTHON,
  NewObj,
  PersId,
  Reduce,
  StorageTable,
  dumps,
  python,
  stateDict,
  torchZip,
  type PV,
} from './io-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tsclip-pt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const f32bytes = (a: number[]) => new Uint8Array(Float32Array.from(a).buffer);

/** A torch.save archive exercising shared storages, strided views, parameters and several dtypes. */
function savedStateDict(method: 'store' | 'deflate' = 'store'): Uint8Array {
  const table = new StorageTable();
  const shared = table.storage('F32', f32bytes([0, 1, 2, 3, 4, 5]), 4);
  const items = new Map<PV, PV>([
    ['w', StorageTable.tensor(shared, 0, [2, 3], [3, 1])],
    ['wt', StorageTable.tensor(shared, 0, [3, 2], [1, 3])], // a transpose saved as a strided view
    ['row1', StorageTable.tensor(shared, 3, [3], [1])],
    ['half', table.contiguous(rawTensor('F16', [3], new Uint8Array(Uint16Array.from([0x3c00, 0xc000, 0x3800]).buffer)), 2)],
    ['ids', table.contiguous(rawTensor('I64', [2], new Uint8Array(BigInt64Array.from([5n, -6n]).buffer)), 8)],
    ['scalar', StorageTable.tensor(table.storage('F32', f32bytes([2.5]), 4), 0, [], [])],
    [
      'param',
      new Reduce(new Global('torch._utils', '_rebuild_parameter'), [
        table.contiguous(fromFloat32(Float32Array.from([9, 8]), [2]), 4),
        true,
        new Reduce(new Global('collections', 'OrderedDict'), []),
      ]),
    ],
  ]);
  return torchZip('archive', dumps(stateDict(items)), table.files, [], method);
}

function checkSaved(t: Map<string, RawTensor>): void {
  expect([...t.keys()].sort()).toEqual(['half', 'ids', 'param', 'row1', 'scalar', 'w', 'wt']);
  expect(t.get('w')!.shape).toEqual([2, 3]);
  expect([...toFloat32(t.get('w')!)]).toEqual([0, 1, 2, 3, 4, 5]);
  expect(t.get('wt')!.shape).toEqual([3, 2]);
  expect([...toFloat32(t.get('wt')!)]).toEqual([0, 3, 1, 4, 2, 5]);
  expect([...toFloat32(t.get('row1')!)]).toEqual([3, 4, 5]);
  expect(t.get('half')!.dtype).toBe('F16');
  expect([...toFloat32(t.get('half')!)]).toEqual([1, -2, 0.5]);
  expect([...toInt32(t.get('ids')!)]).toEqual([5, -6]);
  expect(t.get('scalar')!.shape).toEqual([]);
  expect([...toFloat32(t.get('scalar')!)]).toEqual([2.5]);
  expect([...toFloat32(t.get('param')!)]).toEqual([9, 8]);
}

describe('torch.save zip archives', () => {
  test('stored archive from memory and from a file', async () => {
    const zip = savedStateDict();
    const fromMem = await readTorchArchive(zip, 'mem.pt');
    expect(fromMem.kind).toBe('state_dict');
    checkSaved(fromMem.tensors);
    const file = path.join(dir, 'saved.pt');
    writeFileSync(file, zip);
    checkSaved((await readTorchArchive(file)).tensors);
  });

  test('deflated entries', async () => {
    checkSaved((await readTorchArchive(savedStateDict('deflate'), 'deflate.pt')).tensors);
  });

  test('training checkpoint wrapper: state_dict key, module. prefix, scalar extras, optimizer left unread', async () => {
    const table = new StorageTable();
    const inner = stateDict(new Map<PV, PV>([['module.a', table.contiguous(fromFloat32(Float32Array.from([1, 2])), 4)]]));
    // Optimizer state whose storage entry is absent: it must not be read at all.
    const optStorage = new PersId(['storage', new Global('torch', 'FloatStorage'), 'opt0', 'cpu', 2]);
    const root = new Map<PV, PV>([
      ['epoch', 7],
      ['name', 'run1'],
      ['state_dict', inner],
      ['optimizer', new Map<PV, PV>([['exp_avg', StorageTable.tensor(optStorage, 0, [2], [1])]])],
    ]);
    const a = await readTorchArchive(torchZip('ckpt', dumps(root), table.files), 'ckpt.pt');
    expect([...a.tensors.keys()]).toEqual(['a']);
    expect([...toFloat32(a.tensors.get('a')!)]).toEqual([1, 2]);
    expect(a.extras).toEqual({ epoch: '7', name: 'run1' });
  });

  test('broken archives are named errors', async () => {
    const table = new StorageTable();
    const sid = table.storage('F32', f32bytes([1, 2]), 4);
    const pkl = (t: PV) => dumps(stateDict(new Map<PV, PV>([['x', t]])));
    // A view reaching past its storage.
    await expect(readTorchArchive(torchZip('a', pkl(StorageTable.tensor(sid, 1, [2], [1])), table.files), 'oob.pt')).rejects.toThrow(
      /torch archive oob\.pt: tensor "x" \[2\] at offset 1 reaches element 2, but storage 0 holds 2/,
    );
    // A storage entry that is missing or short.
    await expect(readTorchArchive(torchZip('a', pkl(StorageTable.tensor(sid, 0, [2], [1])), {}), 'miss.pt')).rejects.toThrow(
      /torch archive miss\.pt: storage "0" has no entry a\/data\/0/,
    );
    await expect(readTorchArchive(torchZip('a', pkl(StorageTable.tensor(sid, 0, [2], [1])), { 0: new Uint8Array(4) }), 'short.pt')).rejects.toThrow(
      /storage a\/data\/0 holds 4 bytes, expected 8 \(2 x F32\)/,
    );
    // No data.pkl at all, or a big-endian archive.
    await expect(readTorchArchive(writeZip([{ name: 'x/other', data: new Uint8Array(1) }]), 'none.pt')).rejects.toThrow(
      /torch archive none\.pt: expected one <name>\/data\.pkl entry, found none/,
    );
    const be = writeZip([
      { name: 'a/data.pkl', data: pkl(StorageTable.tensor(sid, 0, [2], [1])) },
      { name: 'a/byteorder', data: Buffer.from('big') },
      { name: 'a/data/0', data: table.files[0] },
    ]);
    await expect(readTorchArchive(be, 'be.pt')).rejects.toThrow(/torch archive be\.pt: byteorder is "big", only "little" is supported/);
  });
});

interface ScriptOptions {
  /** Plain tensor attributes that are not parameters or buffers (must not be loaded). */
  attributes?: Record<string, RawTensor>;
  prefix?: string;
}

/**
 * Packs original-name tensors as a TorchScript archive: one `__torch__` object per module with its
 * parameters in state, and a code/ file per class listing __parameters__ / __buffers__.
 */
function scriptArchive(tensors: Map<string, RawTensor>, opts: ScriptOptions = {}): Uint8Array {
  interface Node {
    children: Map<string, Node>;
    params: Map<string, RawTensor>;
    attrs: Map<string, RawTensor>;
  }
  const mk = (): Node => ({ children: new Map(), params: new Map(), attrs: new Map() });
  const root = mk();
  const place = (name: string, t: RawTensor, kind: 'params' | 'attrs') => {
    const parts = name.split('.');
    let n = root;
    for (const p of parts.slice(0, -1)) {
      if (!n.children.has(p)) n.children.set(p, mk());
      n = n.children.get(p)!;
    }
    n[kind].set(parts[parts.length - 1], t);
  };
  for (const [k, t] of tensors) place(k, t, 'params');
  for (const [k, t] of Object.entries(opts.attributes ?? {})) place(k, t, 'attrs');
  const prefix = opts.prefix ?? 'ViT-tiny';
  const table = new StorageTable();
  const code: ZipInput[] = [];
  let next = 0;
  const build = (n: Node): NewObj => {
    const id = next++;
    const qual = `__torch__.clip.model.___torch_mangle_${id}`;
    const isBuffer = (k: string) => /^(running_mean|running_var|num_batches_tracked|input_resolution|context_length|vocab_size)$/.test(k);
    const params = [...n.params.keys()].filter((k) => !isBuffer(k));
    const buffers = [...n.params.keys()].filter(isBuffer);
    const list = (a: string[]) => a.map((k) => `"${k}", `).join('');
    code.push({
      name: `${prefix}/code/__torch__/clip/model/___torch_mangle_${id}.py`,
      data: Buffer.from(
        `class Block(Module):\n  __parameters__ = [${list(params)}]\n  __buffers__ = [${list(buffers)}]\n` +
          [...n.params.keys()].map((k) => `  ${k} : Tensor\n`).join('') +
          `  training : bool\n  def forward(self: ${qual}.Block) -> None:\n    return None\n`,
      ),
    });
    const state = new Map<PV, PV>([['training', false]]);
    for (const [k, t] of n.params) state.set(k, table.contiguous(t, { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, U8: 1 }[t.dtype]));
    for (const [k, t] of n.attrs) state.set(k, table.contiguous(t, 4));
    for (const [k, c] of n.children) state.set(k, build(c));
    return new NewObj(new Global(qual, 'Block'), [], state);
  };
  const obj = build(root);
  return torchZip(prefix, dumps(obj), table.files, [{ name: `${prefix}/constants.pkl`, data: dumps([]) }, ...code]);
}

describe('TorchScript archives', () => {
  test('module tree gives dotted state_dict names; plain tensor attributes are left out', async () => {
    const t = new Map<string, RawTensor>([
      ['proj', fromFloat32(Float32Array.from([1, 2, 3, 4]), [2, 2])],
      ['blocks.0.attn.in_proj_weight', fromFloat32(Float32Array.from([5, 6]))],
      ['blocks.0.ln.weight', fromFloat32(Float32Array.from([7]))],
      ['blocks.1.ln.weight', fromFloat32(Float32Array.from([8]))],
      ['bn.running_mean', fromFloat32(Float32Array.from([0.5]))],
    ]);
    const zip = scriptArchive(t, { attributes: { 'blocks.0.attn_mask': fromFloat32(Float32Array.from([-1, -1])) } });
    const a = await readTorchArchive(zip, 'script.pt');
    expect(a.kind).toBe('torchscript');
    expect([...a.tensors.keys()].sort()).toEqual([...t.keys()].sort());
    for (const [k, v] of t) expect([...toFloat32(a.tensors.get(k)!)]).toEqual([...toFloat32(v)]);
  });

  test('without code/ files every tensor attribute is collected', async () => {
    const table = new StorageTable();
    const child = new NewObj(new Global('__torch__.m', 'Child'), [], new Map<PV, PV>([['w', table.contiguous(fromFloat32(Float32Array.from([1])), 4)]]));
    const root = new NewObj(new Global('__torch__.m', 'Root'), [], new Map<PV, PV>([['child', child], ['training', true], ['n', 3]]));
    const a = await readTorchArchive(torchZip('r', dumps(root), table.files), 'nocode.pt');
    expect([...a.tensors.keys()]).toEqual(['child.w']);
  });
});

describe.skipIf(!HAVE_FIXTURES)('OpenAI-style .pt from the openai-vit-tiny fixture (needs ../shared/fixtures; skipped when missing)', () => {
  const fx = path.join(FIXTURES, 'openai-vit-tiny');

  test.each(['F32', 'F16'] as const)('%s TorchScript archive reads back with the fixture names, values and config', async (dtype) => {
    const { tensors: ref } = await readSafetensors(path.join(fx, 'weights.safetensors'));
    const packed = new Map([...ref].map(([k, t]) => [k, castFloat(t, dtype)]));
    const scalars = {
      input_resolution: rawTensor('I64', [], new Uint8Array(BigInt64Array.from([32n]).buffer)),
      context_length: rawTensor('I64', [], new Uint8Array(BigInt64Array.from([77n]).buffer)),
      vocab_size: rawTensor('I64', [], new Uint8Array(BigInt64Array.from([512n]).buffer)),
    };
    const file = path.join(dir, `vit-tiny-${dtype}.pt`);
    writeFileSync(
      file,
      scriptArchive(new Map([...packed, ...Object.entries(scalars)]), {
        attributes: { 'transformer.resblocks.0.attn_mask': fromFloat32(new Float32Array(4)) },
      }),
    );
    const ck = await readCheckpoint(file);
    expect(ck.format).toBe('openai-pt');
    expect([...ck.tensors.keys()].sort()).toEqual([...ref.keys()].sort());
    for (const [k, t] of ref) {
      const got = ck.tensors.get(k)!;
      expect(got.dtype).toBe(dtype);
      expect(got.shape).toEqual(t.shape);
      const want = dtype === 'F32' ? toFloat32(t) : toFloat32(castFloat(t, 'F16'));
      expect(toFloat32(got)).toEqual(want);
    }
    expect(ck.metadata).toMatchObject({ input_resolution: '32', context_length: '77', vocab_size: '512' });
    const fixture = JSON.parse(readFileSync(path.join(fx, 'fixture.json'), 'utf8'));
    expect(ck.config).toEqual(configFromOpenAI(fixture.config));
  });
});

describe.skipIf(!HAVE_PYTHON)('pickles written by CPython in the torch.save layout (needs python3; skipped when missing)', () => {
  test('state dict with shared storage, parameter and float64 reads back', async () => {
    // Stand-ins named like torch's globals, so CPython's own pickler writes the exact opcode stream
    // torch.save produces (protocol 2, persistent ids for storages, memoized globals and strings).
    const script = String.raw`
import sys, types, pickle, struct, zipfile, collections
torch = types.ModuleType('torch'); utils = types.ModuleType('torch._utils')
sys.modules['torch'] = torch; sys.modules['torch._utils'] = utils
class FloatStorage: pass
class DoubleStorage: pass
FloatStorage.__module__ = 'torch'; DoubleStorage.__module__ = 'torch'
torch.FloatStorage = FloatStorage; torch.DoubleStorage = DoubleStorage
def _rebuild_tensor_v2(*a): pass
def _rebuild_parameter(*a): pass
_rebuild_tensor_v2.__module__ = 'torch._utils'; _rebuild_parameter.__module__ = 'torch._utils'
utils._rebuild_tensor_v2 = _rebuild_tensor_v2; utils._rebuild_parameter = _rebuild_parameter
class Storage:
    def __init__(self, cls, key, n): self.cls, self.key, self.n = cls, key, n
class T:
    def __init__(self, s, off, size, stride): self.s, self.off, self.size, self.stride = s, off, size, stride
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, (self.s, self.off, self.size, self.stride, False, collections.OrderedDict()))
class P:
    def __init__(self, t): self.t = t
    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (self.t, True, collections.OrderedDict()))
class Saver(pickle.Pickler):
    def persistent_id(self, o):
        if isinstance(o, Storage): return ('storage', o.cls, o.key, 'cpu', o.n)
        return None
s0 = Storage(FloatStorage, '0', 6); s1 = Storage(DoubleStorage, '1', 2)
sd = collections.OrderedDict()
sd['visual.proj'] = T(s0, 0, (2, 3), (3, 1))
sd['visual.proj_t'] = T(s0, 0, (3, 2), (1, 3))
sd['logit_scale'] = P(T(s0, 5, (), ()))
sd['d'] = T(s1, 0, (2,), (1,))
sd._metadata = collections.OrderedDict([('', {'version': 1})])
import io
buf = io.BytesIO(); Saver(buf, protocol=2).dump(sd)
z = zipfile.ZipFile(sys.argv[1], 'w')
z.writestr('archive/data.pkl', buf.getvalue())
z.writestr('archive/byteorder', 'little')
z.writestr('archive/data/0', struct.pack('<6f', 0.5, 1.5, 2.5, 3.5, 4.5, 4.6052))
z.writestr('archive/data/1', struct.pack('<2d', 1e-3, -2.25))
z.writestr('archive/version', '3\n')
z.close()
`;
    const file = path.join(dir, 'cpython.pt');
    const r = python(script, [file]);
    expect(r.stderr).toBe('');
    const a = await readTorchArchive(file);
    expect([...a.tensors.keys()]).toEqual(['visual.proj', 'visual.proj_t', 'logit_scale', 'd']);
    expect([...toFloat32(a.tensors.get('visual.proj')!)]).toEqual([0.5, 1.5, 2.5, 3.5, 4.5, Math.fround(4.6052)]);
    expect([...toFloat32(a.tensors.get('visual.proj_t')!)]).toEqual([0.5, 3.5, 1.5, 4.5, 2.5, Math.fround(4.6052)]);
    expect(a.tensors.get('logit_scale')!.shape).toEqual([]);
    expect([...toFloat32(a.tensors.get('logit_scale')!)]).toEqual([Math.fround(4.6052)]);
    expect(a.tensors.get('d')!.dtype).toBe('F64');
    expect([...toFloat32(a.tensors.get('d')!)]).toEqual([Math.fround(1e-3), -2.25]);
  });

  test('TorchScript-style objects written by CPython (NEWOBJ + BUILD) read as a module tree', async () => {
    const script = String.raw`
import sys, types, pickle, struct, zipfile, collections, io
for name in ['torch', 'torch._utils', '__torch__', '__torch__.clip', '__torch__.clip.model']:
    sys.modules[name] = types.ModuleType(name)
class FloatStorage: pass
FloatStorage.__module__ = 'torch'; sys.modules['torch'].FloatStorage = FloatStorage
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = 'torch._utils'; sys.modules['torch._utils']._rebuild_tensor_v2 = _rebuild_tensor_v2
class Storage:
    def __init__(self, key, n): self.key, self.n = key, n
class T:
    def __init__(self, s, size): self.s, self.size = s, size
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, (self.s, 0, self.size, (1,) * len(self.size) if len(self.size) == 1 else (self.size[1], 1), False, collections.OrderedDict()))
m = sys.modules['__torch__.clip.model']
class CLIP: pass
class Linear: pass
for c in (CLIP, Linear):
    c.__module__ = '__torch__.clip.model'; setattr(m, c.__name__, c)
class Saver(pickle.Pickler):
    def persistent_id(self, o):
        return ('storage', FloatStorage, o.key, 'cuda:0', o.n) if isinstance(o, Storage) else None
lin = Linear(); lin.__dict__.update({'training': False, 'weight': T(Storage('0', 4), (2, 2)), 'bias': T(Storage('1', 2), (2,))})
root = CLIP(); root.__dict__.update({'training': False, 'fc': lin, 'logit_scale': T(Storage('2', 1), (1,)), 'input_resolution': 224})
buf = io.BytesIO(); Saver(buf, protocol=2).dump(root)
z = zipfile.ZipFile(sys.argv[1], 'w')
z.writestr('m/data.pkl', buf.getvalue())
z.writestr('m/data/0', struct.pack('<4f', 1, 2, 3, 4))
z.writestr('m/data/1', struct.pack('<2f', 5, 6))
z.writestr('m/data/2', struct.pack('<f', 7))
z.close()
`;
    const file = path.join(dir, 'cpython-script.pt');
    const r = python(script, [file]);
    expect(r.stderr).toBe('');
    const a = await readTorchArchive(file);
    expect(a.kind).toBe('torchscript');
    expect([...a.tensors.keys()].sort()).toEqual(['fc.bias', 'fc.weight', 'logit_scale']);
    expect([...toFloat32(a.tensors.get('fc.weight')!)]).toEqual([1, 2, 3, 4]);
    expect(a.tensors.get('fc.weight')!.shape).toEqual([2, 2]);
    expect([...toFloat32(a.tensors.get('fc.bias')!)]).toEqual([5, 6]);
    expect([...toFloat32(a.tensors.get('logit_scale')!)]).toEqual([7]);
  });
});
