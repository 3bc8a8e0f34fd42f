// What xp may fetch by URL, decided once: https, and plain http only from this machine (127.0.0.1, ::1, localhost),
// as Deno allows plain-HTTP imports only from loopback hosts. A path written inside a remote file is a URL relative
// to that file, never a path on the local disk.

/** True when `spec` is written as a URL (`scheme://...`), not a path. */
export function isUrl(spec: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(spec);
}

const LOOPBACK = ['127.0.0.1', '[::1]', 'localhost'];

/** Why `url` cannot be fetched (a sentence saying what to do), or undefined when it can. */
export function refusedUrl(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${url} is not a valid URL`;
  }
  if (parsed.protocol === 'https:') return undefined;
  if (parsed.protocol === 'http:') {
    if (LOOPBACK.includes(parsed.hostname)) return undefined;
    return `plain http:// is refused for ${parsed.host} (only 127.0.0.1, ::1 and localhost may be fetched over http, as Deno does); use https://${url.slice('http://'.length)}`;
  }
  return `only https:// URLs can be fetched (got ${parsed.protocol}//); download the file and give its path`;
}

/** The last path segment of a URL, for messages and cache file names (`exp.yaml`, `weights.h5`). */
export function urlFileName(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
  return name.replace(/[^\w.-]/g, '_') || 'index';
}
