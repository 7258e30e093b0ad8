/**
 * A small scanner over JSON text that `JSON.parse` has already accepted, to
 * recover what `JSON.parse` throws away:
 *
 *  - duplicate keys (`JSON.parse` silently keeps the last one, which for a
 *    checkpoint header means one of two tensor entries is ignored), at any depth;
 *  - the textual order of keys (JS objects list integer-like keys such as `"0"`
 *    first, whatever their position in the text).
 *
 * It is iterative (no recursion, so deeply nested input cannot overflow the
 * stack) and linear in the text length.
 */

/** Result of {@link scanJsonKeys}. */
export interface JsonKeyScan {
  /** Keys of the top-level object, in textual order (empty if the top level is not an object). */
  topLevelKeys: string[];
  /** For each top-level key whose value is an object: that object's keys in textual order. */
  secondLevelKeys: Map<string, string[]>;
  /** The first duplicate key found, with the keys leading to the object holding it (`[]` = top level). */
  duplicate?: { key: string; path: string[] };
}

interface Frame {
  /** Keys seen so far (objects), or null (arrays). */
  keys: Set<string> | null;
  /** Ordered keys to report for this object, or null when not collected. */
  order: string[] | null;
  /** True when the next string in this object is a key. */
  expectKey: boolean;
  /** The most recent key of this object (the one whose value is being scanned). */
  lastKey: string;
}

/** Index of the quote closing the string that opens at `start`. */
function stringEnd(text: string, start: number): number {
  let from = start + 1;
  for (;;) {
    const q = text.indexOf('"', from);
    if (q < 0) return text.length; // unterminated: impossible for valid JSON
    let backslashes = 0;
    for (let k = q - 1; k > start && text.charCodeAt(k) === 0x5c; k--) backslashes++;
    if (backslashes % 2 === 0) return q;
    from = q + 1;
  }
}

/**
 * Scans `text`, which must be valid JSON (call `JSON.parse` on it first), for
 * duplicate keys and key order. Stops at the first duplicate.
 */
export function scanJsonKeys(text: string): JsonKeyScan {
  const topLevelKeys: string[] = [];
  const secondLevelKeys = new Map<string, string[]>();
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      const frame = stack[stack.length - 1];
      if (frame !== undefined && frame.keys !== null && frame.expectKey) {
        const raw = text.slice(i + 1, end);
        const key = raw.includes('\\') ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
        if (frame.keys.has(key)) {
          const path = stack.slice(0, -1).filter((f) => f.keys !== null).map((f) => f.lastKey);
          return { topLevelKeys, secondLevelKeys, duplicate: { key, path } };
        }
        frame.keys.add(key);
        frame.order?.push(key);
        frame.lastKey = key;
        frame.expectKey = false;
      }
      i = end + 1;
    } else if (c === 0x7b /* { */) {
      let order: string[] | null = null;
      if (stack.length === 0) order = topLevelKeys;
      else if (stack.length === 1 && stack[0]!.keys !== null) {
        order = [];
        secondLevelKeys.set(stack[0]!.lastKey, order);
      }
      stack.push({ keys: new Set(), order, expectKey: true, lastKey: '' });
      i++;
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: null, order: null, expectKey: false, lastKey: '' });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      const frame = stack[stack.length - 1];
      if (frame !== undefined && frame.keys !== null) frame.expectKey = true;
      i++;
    } else {
      i++;
    }
  }
  return { topLevelKeys, secondLevelKeys };
}

/** Deepest array/object nesting accepted in a header or index (safetensors needs 3). */
export const MAX_JSON_DEPTH = 64;

/**
 * The index of the first `[` / `{` that opens a level deeper than `max` in `text` (strings are
 * skipped), or -1. Works on any text (run before `JSON.parse`, whose result would otherwise be too
 * deep for the recursive JSON.stringify used in messages).
 */
export function jsonDepthExceeded(text: string, max: number): number {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) i = stringEnd(text, i);
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return i;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return -1;
}
