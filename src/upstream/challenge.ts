/** A parsed `WWW-Authenticate` challenge (RFC 7235), as registries send them. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses `Bearer realm="https://auth.example.io/token",service="registry",scope="a,b"`.
 * Values may be quoted (with commas inside) or bare tokens. Only the first challenge is
 * read: registries send one.
 */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const pairs = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/g;
  for (const p of m[2]!.matchAll(pairs)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: m[1]!.toLowerCase(), params };
}
