// Text cleaning of CLIP's simple_tokenizer: ftfy.fix_text, html.unescape twice, whitespace collapsed
// and stripped, lower-cased.
//
// ftfy.fix_text (6.x, default settings) is reproduced step for step, except for its mojibake repair
// (`fix_encoding`: re-decoding text such as "cafÃ©" through guessed single-byte codecs, driven by
// a statistical "badness" score). Text that is not mojibake passes that step unchanged, so the
// steps below give the same result on real text. Implemented, in ftfy's order, per line, repeated
// until nothing changes:
//   - HTML entities: unescaped unless a '<' has been seen on this or an earlier line;
//   - C1 controls U+0080-U+009F read as Windows-1252 (U+0085 -> '…');
//   - Latin ligatures and digraphs split (ﬁ -> fi, ﬀ ﬂ ﬃ ﬄ ﬅ ﬆ, Ĳ ĳ ŉ, Ǳ-ǳ, Ǆ-ǆ, Ǉ-ǉ, Ǌ-ǌ);
//   - half-width and full-width forms U+FF01-U+FFEF to their NFKC form, U+3000 to a space;
//   - curly quotes to straight: U+02BC, U+2018-U+201B -> ', U+201C-U+201F -> ";
//   - line breaks (CRLF, CR, U+2028, U+2029, U+0085) to LF;
//   - lone UTF-16 surrogates to U+FFFD;
//   - ANSI terminal escapes (ESC [ digits/; letter) removed;
//   - control characters U+0000-U+0008, U+000B, U+000E-U+001F, U+007F, U+206A-U+206F, U+FEFF,
//     U+FFF9-U+FFFC removed;
//   - Unicode NFC.
// ftfy's 1,000,000-character segment limit is not reproduced (it only matters for longer lines).
import { CP1252_C1, ftfyUnescapeHtml, pythonHtmlUnescape } from './html.js';

/** Characters Python's `regex` module treats as \s (the Unicode White_Space set). */
export const PY_WHITESPACE = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

const LIGATURES: Record<string, string> = {
  '\u0132': 'IJ', '\u0133': 'ij', '\u0149': '\u02bcn',
  '\u01f1': 'DZ', '\u01f2': 'Dz', '\u01f3': 'dz',
  '\u01c4': 'D\u017d', '\u01c5': 'D\u017e', '\u01c6': 'd\u017e',
  '\u01c7': 'LJ', '\u01c8': 'Lj', '\u01c9': 'lj',
  '\u01ca': 'NJ', '\u01cb': 'Nj', '\u01cc': 'nj',
  '\ufb00': 'ff', '\ufb01': 'fi', '\ufb02': 'fl', '\ufb03': 'ffi', '\ufb04': 'ffl', '\ufb05': '\u017ft', '\ufb06': 'st',
};
const LIGATURE_RE = /[\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06]/g;

// Built from the platform's NFKC, as ftfy builds it from Python's.
let widthMap: Map<string, string> | undefined;
function widthForm(ch: string): string {
  if (!widthMap) {
    widthMap = new Map([['\u3000', ' ']]);
    for (let c = 0xff01; c < 0xfff0; c++) {
      const s = String.fromCharCode(c);
      const alt = s.normalize('NFKC');
      if (alt !== s) widthMap.set(s, alt);
    }
  }
  return widthMap.get(ch) ?? ch;
}
const WIDTH_RE = /[\u3000\uff01-\uffef]/g;

const C1_RE = /[\x80-\x9f]/g;
const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;
const LINE_BREAK_RE = /\r\n|[\r\u2028\u2029\x85]/g;
const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const ANSI_RE = /\x1b\[(?:\p{Nd}|;)*[a-zA-Z]/gu;
const CONTROL_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

// Characters that some step of fixText or html.unescape would change, NFC aside. None of them can
// come out of NFC (none has a canonical decomposition, none is the target of one), so text without
// them cleans to its NFC form. With the 'u' flag the surrogate range matches lone surrogates only.
const NEEDS_FIXING_RE =
  /[&\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\u02bc\u2018-\u201f\u2028\u2029\u206a-\u206f\u3000\ud800-\udfff\ufb00-\ufb06\ufeff\uff01-\uffef\ufff9-\ufffc]/u;

function fixSegment(segment: string, unescape: boolean): string {
  let text = segment;
  for (;;) {
    const before = text;
    if (unescape) text = ftfyUnescapeHtml(text);
    text = text.replace(C1_RE, (c) => CP1252_C1[c.charCodeAt(0) - 0x80]);
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
    text = text.replace(WIDTH_RE, widthForm);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = text.replace(LINE_BREAK_RE, '\n');
    text = text.replace(LONE_SURROGATE_RE, '\ufffd');
    text = text.replace(ANSI_RE, '');
    text = text.replace(CONTROL_RE, '');
    text = text.normalize('NFC');
    // A further round could only normalize again, which changes nothing.
    if (text === before || !NEEDS_FIXING_RE.test(text)) return text;
  }
}

/** ftfy.fix_text with default settings, less mojibake repair (see the top of this file). */
export function fixText(text: string): string {
  let unescape = true;
  let out = '';
  for (let pos = 0; pos < text.length; ) {
    const nl = text.indexOf('\n', pos);
    const end = nl < 0 ? text.length : nl + 1;
    const segment = text.slice(pos, end);
    // Once a line contains '<' the text may be HTML, so entities stay as they are from then on.
    if (unescape && segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}

const WS_RUN_RE = new RegExp(`[${PY_WHITESPACE}]+`, 'g');
const WS_EDGES_RE = new RegExp(`^[${PY_WHITESPACE}]+|[${PY_WHITESPACE}]+$`, 'g');

/** whitespace_clean: runs of whitespace to one space, then stripped. */
export function collapseWhitespace(text: string): string {
  return text.replace(WS_RUN_RE, ' ').replace(WS_EDGES_RE, '');
}

function fixAndUnescape(text: string): string {
  if (!NEEDS_FIXING_RE.test(text)) return text.normalize('NFC');
  return pythonHtmlUnescape(pythonHtmlUnescape(fixText(text)));
}

/** The complete cleaning: what the tokenizer splits into words. */
export function cleanText(text: string): string {
  return collapseWhitespace(fixAndUnescape(text)).toLowerCase();
}

/** Cleaning for splitting only: whitespace is not collapsed, since the word pattern skips it. */
export function cleanForSplit(text: string): string {
  return fixAndUnescape(text).toLowerCase();
}
