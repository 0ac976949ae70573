// Byte-level BPE works on bytes, but merges files store tokens as text. CLIP (like GPT-2) maps each
// of the 256 byte values to one printable character: bytes that are already printable Latin-1
// ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 to U+0100.. in byte order.
// The vocabulary lists the 256 byte characters in this order (printable ones first), so a byte's
// token id is its position in BYTE_ORDER, not its value.

/** The 256 byte values in vocabulary order. */
export const BYTE_ORDER: readonly number[] = (() => {
  const order: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) order.push(b);
  for (let b = 0xa1; b <= 0xac; b++) order.push(b);
  for (let b = 0xae; b <= 0xff; b++) order.push(b);
  const printable = new Set(order);
  for (let b = 0; b < 256; b++) if (!printable.has(b)) order.push(b);
  return order;
})();

/** byte value -> its printable character. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars = new Array<string>(256);
  let extra = 0;
  for (const b of BYTE_ORDER) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = printable ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return chars;
})();

/** printable character code -> byte value (-1 where the character is not a byte character). */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const map = new Int16Array(256 + 68).fill(-1);
  for (let b = 0; b < 256; b++) map[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return map;
})();

/** byte value -> vocabulary id of the byte token (and +256 for the byte + '</w>' token). */
export const BYTE_TO_ID: Int32Array = (() => {
  const ids = new Int32Array(256);
  BYTE_ORDER.forEach((b, i) => (ids[b] = i));
  return ids;
})();

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string (lone surrogates become U+FFFD, as ftfy leaves them). */
export function utf8Bytes(text: string): Uint8Array {
  return utf8.encode(text);
}

/** The byte-character spelling of a string's UTF-8 bytes (the form merges files use). */
export function toByteChars(text: string): string {
  let out = '';
  for (const b of utf8.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** Bytes spelled by a byte-character string; throws on characters outside the byte alphabet. */
export function fromByteChars(text: string, where: string): number[] {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    if (b < 0) {
      throw new Error(`${where}: character U+${c.toString(16).toUpperCase().padStart(4, '0')} in "${text}" is not a byte character`);
    }
    bytes.push(b);
  }
  return bytes;
}
