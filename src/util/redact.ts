/**
 * Text that may be a URL or an address, fit to quote in an error or a log: what stands before
 * the last `@` of its authority becomes `mask`, because flags, files and DOCKER_HOST may carry
 * `user:pass@` and messages end up in CI logs. The last `@`, since a password may hold `@`, `/`
 * or `#`; a path (`unix:///...`) has no authority. Text without a scheme is treated as an
 * authority that may carry credentials.
 */
export function redactUserinfo(text: string, mask = '***@'): string {
  const scheme = /^\s*[a-z][a-z0-9+.-]*:\/\//i.exec(text);
  if (!scheme) return text.includes('@') ? `${mask}${text.slice(text.lastIndexOf('@') + 1)}` : text;
  const rest = text.slice(scheme[0].length);
  const at = rest.lastIndexOf('@');
  if (rest.startsWith('/') || at < 0) return text;
  return `${scheme[0]}${mask}${rest.slice(at + 1)}`;
}
