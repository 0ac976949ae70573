// CLIP's word pattern. The reference compiles it with IGNORECASE on lower-cased text, which only
// matters where a character case-folds to a pattern letter without being its lower-case form:
// 'ſ' (U+017F) matches 's'. That is spelled out here instead of using the 'i' flag, because the 'i'
// flag would also pull U+0345 into \p{L}, which the reference does not. \s is Python's set.
import { PY_WHITESPACE } from "./clean.js";

const WORD_RE = new RegExp(
  "<\\|[s\u017f]tartoftext\\|>|<\\|endoftext\\|>|'[s\u017f]|'t|'re|'ve|'m|'ll|'d|" +
    `\\p{L}+|\\p{N}|[^${PY_WHITESPACE}\\p{L}\\p{N}]+`,
  "gu",
);

/** The words of a cleaned text, in order (re.findall of the reference pattern). */
export function splitWords(cleaned: string): string[] {
  return cleaned.match(WORD_RE) ?? [];
}
