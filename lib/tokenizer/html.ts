// The two HTML unescapers the reference text cleaning runs: ftfy's (whole entities only, with
// upper-cased variants such as "&EACUTE;") and Python's html.unescape (WHATWG rules: legacy names
// without ';', longest-prefix matching, Windows-1252 numbers 0x80-0x9F, invalid code points dropped).
import { htmlEntities } from './entities.js';

/** Windows-1252 characters for 0x80-0x9F; the five undefined bytes keep their Latin-1 value. */
export const CP1252_C1: readonly string[] = Array.from(
  '\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f' +
    '\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178',
);

// Code points that html.unescape drops when written as a numeric reference.
function isDroppedCodePoint(n: number): boolean {
  return (
    (n >= 0x1 && n <= 0x8) ||
    n === 0xb ||
    (n >= 0xe && n <= 0x1f) ||
    (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) ||
    (n & 0xfffe) === 0xfffe
  );
}

function numericReference(num: number): string {
  if (num === 0) return '\ufffd';
  if (num === 0x0d) return '\r';
  if (num >= 0x80 && num <= 0x9f) return CP1252_C1[num - 0x80];
  if ((num >= 0xd800 && num <= 0xdfff) || !(num <= 0x10ffff)) return '\ufffd';
  if (isDroppedCodePoint(num)) return '';
  return String.fromCodePoint(num);
}

// Same alternatives as Python's html module; the 'u' flag makes {1,32} count code points.
const CHARREF_RE = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(_match: string, s: string): string {
  if (s[0] === '#') {
    const hex = s[1] === 'x' || s[1] === 'X';
    const digits = s.slice(hex ? 2 : 1).replace(/;$/, '');
    return numericReference(parseInt(digits, hex ? 16 : 10));
  }
  const entities = htmlEntities();
  const whole = entities.get(s);
  if (whole !== undefined) return whole;
  // Longest legacy name that prefixes the text ("&ampx" -> "&x"); prefixes are at least 2 long.
  for (let x = s.length - 1; x > 1; x--) {
    const hit = entities.get(s.slice(0, x));
    if (hit !== undefined) return hit + s.slice(x);
  }
  return '&' + s;
}

/** Python's html.unescape. */
export function pythonHtmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF_RE, replaceCharref);
}

let ftfyTable: Map<string, string> | undefined;

// ftfy decodes only names that end in ';', plus an upper-cased spelling of each all-lowercase
// name when that spelling is not itself something html.unescape would decode.
function ftfyEntities(): Map<string, string> {
  if (ftfyTable) return ftfyTable;
  const table = new Map<string, string>();
  for (const [name, char] of htmlEntities()) {
    if (!name.endsWith(';')) continue;
    table.set('&' + name, char);
    if (name === name.toLowerCase()) {
      const upper = '&' + name.toUpperCase();
      if (pythonHtmlUnescape(upper) === upper) table.set(upper, char.toUpperCase());
    }
  }
  ftfyTable = table;
  return table;
}

const FTFY_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

/** ftfy.fixes.unescape_html: whole, ';'-terminated references only. */
export function ftfyUnescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  const table = ftfyEntities();
  return text.replace(FTFY_ENTITY_RE, (entity) => {
    const named = table.get(entity);
    if (named !== undefined) return named;
    if (entity.startsWith('&#')) {
      // Keep the text when html.unescape decoded only part of it (the ';' survived).
      const decoded = pythonHtmlUnescape(entity);
      return decoded.includes(';') ? entity : decoded;
    }
    return entity;
  });
}
