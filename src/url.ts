// Reading a string that may not be a URL. `new URL` throws on one that is not (Node 20 has no
// `URL.parse`), so each caller wrote its own try/catch; these are the one place that does.

/** `s` as an absolute URL, or undefined when it is not one. */
export function parseUrl(s: string): URL | undefined {
  try {
    return new URL(s);
  } catch {
    return undefined;
  }
}

/** `s` as an absolute http: or https: URL, or undefined. */
export function parseHttpUrl(s: string): URL | undefined {
  const u = parseUrl(s);
  return u && (u.protocol === 'http:' || u.protocol === 'https:') ? u : undefined;
}
