// CLIP's word pattern. The reference compiles it with IGNORECASE (Python's `regex` module) and runs it
// on lower-cased text. Two characters behave differently there, and are spelled out here instead of
// using the 'i' flag (which would pull U+0345 into \p{L}): 'ſ' (U+017F) matches the letter 's', and
// U+0345 (combining ypogegrammeni) matches no alternative at all, so it is dropped like whitespace.
// \s is Python's whitespace set.
import { PY_WHITESPACE } from './clean.js';

const WORD_RE = new RegExp(
  "<\\|[s\u017f]tartoftext\\|>|<\\|endoftext\\|>|'[s\u017f]|'t|'re|'ve|'m|'ll|'d|" +
    `\\p{L}+|\\p{N}|[^${PY_WHITESPACE}\\p{L}\\p{N}\u0345]+`,
  'gu',
);

/** The words of a cleaned text, in order (re.findall of the reference pattern). */
export function splitWords(cleaned: string): string[] {
  return cleaned.match(WORD_RE) ?? [];
}
