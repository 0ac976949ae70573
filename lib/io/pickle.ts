// A restricted unpickler: a stack machine over the binary opcodes (protocols 2-5) that PyTorch
// writes. It executes nothing. GLOBAL names go through the caller's resolver, which must refuse
// anything it does not know; REDUCE and NEWOBJ only invoke the resolver's own JavaScript stand-ins.

/** A stand-in the resolver returns for an allowed global function (REDUCE calls it with the args). */
export class PickleFunction {
  constructor(
    readonly qualname: string,
    readonly fn: (args: unknown[]) => unknown,
  ) {}
}

/** A stand-in for an allowed class: NEWOBJ and REDUCE construct an inert PickleObject. */
export class PickleClass {
  constructor(
    readonly qualname: string,
    /** Whether REDUCE may construct it (TorchScript objects only ever come through NEWOBJ). */
    readonly reducible = false,
  ) {}
}

/** An instance of an allowed class: its constructor arguments and the state BUILD gave it. */
export class PickleObject {
  state: unknown = undefined;
  constructor(
    readonly className: string,
    readonly args: unknown[],
  ) {}
}

export interface UnpickleOptions {
  /** Maps GLOBAL module.name to a stand-in; must throw for names it does not allow. */
  resolveGlobal(module: string, name: string): PickleFunction | PickleClass;
  /** Resolves BINPERSID ids (PyTorch's storage references). */
  persistentLoad?(pid: unknown): unknown;
  /** Names the stream in error messages. */
  source?: string;
}

/** Refuses every global: the default, and the message every refusal uses. */
export function refuseGlobal(module: string, name: string): never {
  throw new Error(`refused pickle global ${module}.${name}`);
}

const MARK = Symbol('mark');

const OP = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, POP_MARK: 0x31, DUP: 0x32,
  BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, NONE: 0x4e,
  BINPERSID: 0x51, REDUCE: 0x52, BINSTRING: 0x54, SHORT_BINSTRING: 0x55, BINUNICODE: 0x58,
  EMPTY_LIST: 0x5d, APPEND: 0x61, BUILD: 0x62, GLOBAL: 0x63, APPENDS: 0x65,
  BINGET: 0x68, LONG_BINGET: 0x6a, LIST: 0x6c, BINPUT: 0x71, LONG_BINPUT: 0x72,
  SETITEM: 0x73, TUPLE: 0x74, SETITEMS: 0x75, EMPTY_DICT: 0x7d, DICT: 0x64, EMPTY_TUPLE: 0x29,
  BINFLOAT: 0x47, BINBYTES: 0x42, SHORT_BINBYTES: 0x43,
  PROTO: 0x80, NEWOBJ: 0x81, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87,
  NEWTRUE: 0x88, NEWFALSE: 0x89, LONG1: 0x8a, LONG4: 0x8b,
  SHORT_BINUNICODE: 0x8c, BINUNICODE8: 0x8d, BINBYTES8: 0x8e,
  EMPTY_SET: 0x8f, ADDITEMS: 0x90, FROZENSET: 0x91, STACK_GLOBAL: 0x93, MEMOIZE: 0x94, FRAME: 0x95,
  BYTEARRAY8: 0x96,
} as const;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

/** Runs the pickle program in `bytes` and returns the value STOP leaves on the stack. */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): unknown {
  const src = opts.source ?? 'pickle';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const fail = (msg: string): never => {
    throw new Error(`${src}: ${msg} (at byte ${pos})`);
  };
  const need = (n: number) => {
    if (n < 0 || pos + n > bytes.byteLength) fail(`truncated: needs ${n} more bytes, ${bytes.byteLength - pos} left`);
  };
  const u8 = () => (need(1), bytes[pos++]);
  const u16 = () => (need(2), (pos += 2), dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), (pos += 4), dv.getUint32(pos - 4, true));
  const i32 = () => (need(4), (pos += 4), dv.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(bytes.byteLength)) fail(`length ${v} exceeds the stream`);
    return Number(v);
  };
  const take = (n: number) => (need(n), (pos += n), bytes.subarray(pos - n, pos));
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail('unterminated text line');
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const text = (n: number) => {
    try {
      return utf8.decode(take(n));
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const pop = () => {
    if (stack.length === 0) fail('stack underflow');
    const v = stack.pop();
    if (v === MARK) fail('unexpected MARK on the stack');
    return v;
  };
  const top = () => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) fail('no MARK to pop to');
    stack = prev!;
    return items;
  };
  const signedLE = (b: Uint8Array): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const global = (module: string, name: string) => opts.resolveGlobal(module, name);
  const setItems = (target: unknown, kv: unknown[]) => {
    if (!(target instanceof Map)) fail(`SETITEM(S) on a ${describe(target)}, expected a dict`);
    if (kv.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < kv.length; i += 2) (target as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const appendItems = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) fail(`APPEND(S) on a ${describe(target)}, expected a list`);
    (target as unknown[]).push(...items);
  };
  const construct = (cls: unknown, args: unknown, how: 'REDUCE' | 'NEWOBJ'): unknown => {
    if (!Array.isArray(args)) return fail(`${how} arguments must be a tuple, found ${describe(args)}`);
    if (cls instanceof PickleFunction && how === 'REDUCE') return cls.fn(args);
    if (cls instanceof PickleClass && (how === 'NEWOBJ' || cls.reducible)) return new PickleObject(cls.qualname, args);
    return fail(`${how} on ${describe(cls)} is not allowed`);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case OP.PROTO:
        if (u8() > 5) fail('pickle protocol above 5');
        break;
      case OP.FRAME:
        u64(); // frames only group opcodes; the stream is already in memory
        break;
      case OP.STOP: {
        const v = pop();
        return v;
      }
      case OP.MARK:
        marks.push(stack);
        stack = [];
        break;
      case OP.POP:
        if (stack.length === 0) popMark();
        else stack.pop();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT:
        stack.push(i32());
        break;
      case OP.BININT1:
        stack.push(u8());
        break;
      case OP.BININT2:
        stack.push(u16());
        break;
      case OP.LONG1:
        stack.push(signedLE(take(u8())));
        break;
      case OP.LONG4: {
        const n = i32();
        if (n < 0) fail('negative LONG4 length');
        stack.push(signedLE(take(n)));
        break;
      }
      case OP.BINFLOAT:
        need(8);
        stack.push(dv.getFloat64(pos, false)); // pickle floats are big-endian
        pos += 8;
        break;
      case OP.BINUNICODE:
        stack.push(text(u32()));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(text(u8()));
        break;
      case OP.BINUNICODE8:
        stack.push(text(u64()));
        break;
      case OP.BINSTRING: {
        const n = i32();
        if (n < 0) fail('negative BINSTRING length');
        stack.push(latin1.decode(take(n)));
        break;
      }
      case OP.SHORT_BINSTRING:
        stack.push(latin1.decode(take(u8())));
        break;
      case OP.BINBYTES:
        stack.push(take(u32()));
        break;
      case OP.SHORT_BINBYTES:
        stack.push(take(u8()));
        break;
      case OP.BINBYTES8:
      case OP.BYTEARRAY8:
        stack.push(take(u64()));
        break;
      case OP.EMPTY_DICT:
        stack.push(new Map());
        break;
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_TUPLE:
        stack.push([]);
        break;
      case OP.EMPTY_SET:
        stack.push(new Set());
        break;
      case OP.TUPLE:
      case OP.LIST: {
        // popMark() replaces `stack`, so take the items before touching it.
        const items = popMark();
        stack.push(items);
        break;
      }
      case OP.DICT: {
        const m = new Map();
        setItems(m, popMark());
        stack.push(m);
        break;
      }
      case OP.FROZENSET: {
        const items = popMark();
        stack.push(new Set(items));
        break;
      }
      case OP.TUPLE1: {
        const a = pop();
        stack.push([a]);
        break;
      }
      case OP.TUPLE2: {
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      }
      case OP.APPEND: {
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case OP.SETITEM: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case OP.SETITEMS: {
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case OP.ADDITEMS: {
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) fail(`ADDITEMS on a ${describe(s)}, expected a set`);
        for (const it of items) (s as Set<unknown>).add(it);
        break;
      }
      case OP.BINPUT:
        memo.set(u8(), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(u32(), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const k = op === OP.BINGET ? u8() : u32();
        if (!memo.has(k)) fail(`memo key ${k} was never stored`);
        stack.push(memo.get(k));
        break;
      }
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        stack.push(construct(fn, args, 'REDUCE'));
        break;
      }
      case OP.NEWOBJ: {
        const args = pop();
        const cls = pop();
        stack.push(construct(cls, args, 'NEWOBJ'));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        const obj = top();
        if (obj instanceof PickleObject) obj.state = state;
        else if (obj instanceof Map) {
          // An OrderedDict's BUILD restores attributes such as _metadata; they carry no weights.
        } else fail(`BUILD on a ${describe(obj)} is not allowed`);
        break;
      }
      case OP.BINPERSID: {
        const pid = pop();
        if (!opts.persistentLoad) fail('persistent id found but this stream allows none');
        stack.push(opts.persistentLoad!(pid));
        break;
      }
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

function describe(v: unknown): string {
  if (v instanceof PickleFunction) return `function ${v.qualname}`;
  if (v instanceof PickleClass) return `class ${v.qualname}`;
  if (v instanceof PickleObject) return `${v.className} object`;
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'tuple/list';
  if (v instanceof Map) return 'dict';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v;
}
