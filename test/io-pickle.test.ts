import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { readCheckpoint } from '../lib/io/checkpoint.js';
import { PickleFunction, refuseGlobal, unpickle } from '../lib/io/pickle.js';
import { readTorchArchive } from '../lib/io/torch.js';
import { Global, HAVE_PYTHON, NewObj, RawOps, Reduce, StorageTable, dumps, python, torchZip, type PV } from './io-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tsclip-pickle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!HAVE_PYTHON)('opcodes written by CPython, protocols 2 to 5 (needs python3; skipped when missing)', () => {
  const script = String.raw`
import sys, pickle
s = [1]
obj = {
  'ints': [0, 1, 255, 256, 65535, 65536, -1, -2**31, 2**31 - 1, 2**31, 2**53 - 1, -2**62, 2**70, -2**70],
  'floats': [1.5, -0.0, float('inf'), 1e-300, 3.141592653589793],
  'strs': ('x', 'ünïcödé ☃', 'a' * 300, ''),
  'consts': (None, True, False),
  'shared': [s, s],
  'nested': {'k': {'j': ()}, 3: [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)]},
}
# Before protocol 3 bytes, and before 4 sets, are pickled as calls to globals, which stay refused.
if int(sys.argv[1]) >= 3: obj['bytes'] = b'\x00\x01\xff'
if int(sys.argv[1]) >= 4: obj['set'] = {7}; obj['frozen'] = frozenset([8])
sys.stdout.buffer.write(pickle.dumps(obj, protocol=int(sys.argv[1])))
`;
  test.each([2, 3, 4, 5])('protocol %i decodes to the same values', (protocol) => {
    const r = python(script, [String(protocol)]);
    expect(r.stderr).toBe('');
    const v = unpickle(r.stdout, { resolveGlobal: refuseGlobal }) as Map<unknown, unknown>;
    expect(v.get('ints')).toEqual([0, 1, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, 2 ** 53 - 1, -(2n ** 62n), 2n ** 70n, -(2n ** 70n)]);
    const floats = v.get('floats') as number[];
    expect(floats).toEqual([1.5, -0, Infinity, 1e-300, Math.PI]);
    expect(Object.is(floats[1], -0)).toBe(true);
    expect(v.get('strs')).toEqual(['x', 'ünïcödé ☃', 'a'.repeat(300), '']);
    if (protocol >= 3) expect([...(v.get('bytes') as Uint8Array)]).toEqual([0, 1, 255]);
    expect(v.get('consts')).toEqual([null, true, false]);
    const shared = v.get('shared') as unknown[][];
    expect(shared[0]).toEqual([1]);
    expect(shared[0]).toBe(shared[1]); // memo references keep identity
    const nested = v.get('nested') as Map<unknown, unknown>;
    expect((nested.get('k') as Map<unknown, unknown>).get('j')).toEqual([]);
    expect(nested.get(3)).toEqual([[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]);
    if (protocol >= 4) {
      expect(v.get('set')).toEqual(new Set([7]));
      expect(v.get('frozen')).toEqual(new Set([8]));
    }
  });
});

describe('malicious pickles are refused and nothing runs', () => {
  const sentinel = path.join(dir, 'pwned');
  const shell = `touch ${sentinel}`;

  const cases: [string, PV, RegExp, boolean?][] = [
    ['GLOBAL os.system + REDUCE', new Reduce(new Global('os', 'system'), [shell]), /refused pickle global os\.system/],
    ['GLOBAL posix.system + REDUCE', new Reduce(new Global('posix', 'system'), [shell]), /refused pickle global posix\.system/],
    ['GLOBAL builtins.eval + REDUCE', new Reduce(new Global('builtins', 'eval'), [`__import__('os').system('${shell}')`]), /refused pickle global builtins\.eval/],
    ['STACK_GLOBAL subprocess.Popen', new Reduce(new Global('subprocess', 'Popen'), [[('sh' as PV), '-c', shell]]), /refused pickle global subprocess\.Popen/, true],
    ['a torch-looking name that is not allowlisted', new Reduce(new Global('torch', 'load'), [shell]), /refused pickle global torch\.load/],
    ['a __torch__ placeholder invoked through REDUCE', new Reduce(new Global('__torch__.os', 'system'), [shell]), /REDUCE on class __torch__\.os\.system is not allowed/],
    ['a storage class invoked through REDUCE', new Reduce(new Global('torch', 'FloatStorage'), [shell]), /REDUCE on class torch\.FloatStorage is not allowed/],
    ['NEWOBJ on an allowed function', new NewObj(new Global('torch._utils', '_rebuild_parameter'), [shell]), /NEWOBJ on function torch\._utils\._rebuild_parameter is not allowed/],
    // INST and OBJ instantiate classes by name; the unpickler does not implement them at all.
    ['INST opcode', new RawOps([0x28, 0x8c, shell.length, ...Buffer.from(shell), 0x69, ...Buffer.from('os\nsystem\n')]), /unsupported pickle opcode 0x69/],
    ['OBJ opcode', new RawOps([0x28, ...Buffer.from(`cos\nsystem\n`), 0x6f]), /refused pickle global os\.system/],
    ['BUILD state onto a function', new RawOps([...Buffer.from('ctorch._utils\n_rebuild_parameter\n'), 0x7d, 0x62]), /BUILD on a function torch\._utils\._rebuild_parameter is not allowed/],
  ];

  test.each(cases)('%s', async (_, payload, message, stackGlobal) => {
    const bytes = dumps(payload, { protocol: stackGlobal ? 4 : 2, stackGlobal });
    // Through the torch archive reader, which has the allowlist...
    const zip = torchZip('evil', bytes, {});
    await expect(readTorchArchive(zip, 'evil.pt')).rejects.toThrow(message);
    // ...and through the bare unpickler with the refuse-everything resolver.
    expect(() => unpickle(bytes, { resolveGlobal: refuseGlobal })).toThrow();
    expect(existsSync(sentinel)).toBe(false);
  });

  test('allowed functions only ever run their JavaScript stand-ins', () => {
    let calls = 0;
    const v = unpickle(dumps(new Reduce(new Global('m', 'f'), [1, 2])), {
      resolveGlobal: (m, n) => new PickleFunction(`${m}.${n}`, (args) => (calls++, args.length)),
    });
    expect(v).toBe(2);
    expect(calls).toBe(1);
  });

  test('truncated and malformed streams are named errors', () => {
    const good = dumps(new Map<PV, PV>([['a', 1]]));
    expect(() => unpickle(good.subarray(0, good.length - 3), { resolveGlobal: refuseGlobal, source: 'cut.pkl' })).toThrow(/cut\.pkl: truncated: needs 4 more bytes, 2 left/);
    expect(() => unpickle(Uint8Array.from([0x80, 2, 0x68, 9, 0x2e]), { resolveGlobal: refuseGlobal, source: 'memo.pkl' })).toThrow(/memo\.pkl: memo key 9 was never stored/);
    expect(() => unpickle(Uint8Array.from([0x80, 2, 0x2e]), { resolveGlobal: refuseGlobal })).toThrow(/stack underflow/);
    expect(() => unpickle(Uint8Array.from([0x80, 2, 0x51, 0x2e]), { resolveGlobal: refuseGlobal })).toThrow(/stack underflow \(at byte 3\)/);
  });
});

describe.skipIf(!HAVE_PYTHON)('a real exploit pickled by CPython (needs python3; skipped when missing)', () => {
  test('CPython runs it; the checkpoint reader refuses it and nothing runs', async () => {
    const armed = path.join(dir, 'armed');
    const sentinel = path.join(dir, 'exploit-ran');
    const make = String.raw`
import os, sys, pickle
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[1],))
sys.stdout.buffer.write(pickle.dumps({'weight': Evil()}, protocol=2))
`;
    const evilFor = (target: string) => python(make, [target]).stdout;
    // The payload is live: CPython's own unpickler executes it.
    const armedPkl = path.join(dir, 'armed.pkl');
    writeFileSync(armedPkl, evilFor(armed));
    expect(python('import sys, pickle; pickle.loads(open(sys.argv[1], "rb").read())', [armedPkl]).status).toBe(0);
    expect(existsSync(armed)).toBe(true);

    const file = path.join(dir, 'exploit.pt');
    writeFileSync(file, torchZip('archive', evilFor(sentinel), {}));
    await expect(readCheckpoint(file)).rejects.toThrow(/refused pickle global (posix|os|nt)\.system/);
    expect(existsSync(sentinel)).toBe(false);
  });
});

describe('storage references in pickles are validated', () => {
  test('keys that try to leave the archive directory are refused', async () => {
    const pid = new StorageTable().storage('F32', new Uint8Array(4), 4);
    (pid.id as PV[])[2] = '../../etc/passwd';
    const bytes = dumps(new Map<PV, PV>([['w', StorageTable.tensor(pid, 0, [1], [1])]]));
    await expect(readTorchArchive(torchZip('a', bytes, {}), 'keys.pt')).rejects.toThrow(/bad storage key "\.\.\/\.\.\/etc\/passwd"/);
  });
});
