/**
 * Text that comes from a file (tensor names, metadata, zip entry names) is untrusted: printed raw
 * it can move the cursor, clear the screen, set the window title (C0/C1 control characters and
 * escape sequences) or reorder what the reader sees (bidirectional overrides). Everything shown
 * to a person — CLI tables and every CheckpointError message — goes through these helpers.
 */

/** Characters shown escaped: C0 controls, DEL, C1 controls, bidi controls, invisible separators. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\u3164\ufe00-\ufe0f\ufeff\ufff9-\ufffb]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  switch (c) {
    case '\n': return '\\n';
    case '\r': return '\\r';
    case '\t': return '\\t';
    default: return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  }
}

/**
 * `s` with control, bidirectional-override and invisible characters (and lone surrogates) written
 * as `\xNN` / `\uNNNN`, and backslashes doubled, so that the result is unambiguous and inert on a
 * terminal. Printable text (any script) is left as it is.
 */
export function escapeControl(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(UNSAFE, escapeChar);
}

/** `"…"` around {@link escapeControl}(s), with `"` escaped: the form error messages use for names. */
export function quote(s: string): string {
  return `"${escapeControl(s).replace(/"/g, '\\"')}"`;
}
