// How a URL is shown and stored, decided once: the password of its user info (user:password@) is masked, in every
// scheme (http, https, redis, postgresql+psycopg2, ...), so it never reaches a terminal, a log, a file or a server.
// Parsed by hand rather than with `new URL`: database URLs are not WHATWG URLs, and a password may hold an '@'.

export const MASK = '***';

// scheme://  userinfo (up to the last '@' of the authority)  @
const WITH_USERINFO = /([a-z][a-z0-9+.-]*:\/\/)([^/?#\s@]*(?:@[^/?#\s@]*)*)@/gi;

/** The URL with its password replaced by ***: `https://me:***@host/x`; a URL without one, or any other text, unchanged. */
export function redactUrl(url: string): string {
  return redactText(url);
}

/** Every URL inside a text (an error message, a flag such as `--set tracking.uri=...`) with its password masked. */
export function redactText(text: string): string {
  return text.replace(WITH_USERINFO, (whole, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return colon < 0 ? whole : `${scheme}${userinfo.slice(0, colon)}:${MASK}@`;
  });
}

export interface Userinfo {
  username: string;
  /** undefined when the URL has none, or only the mask. */
  password?: string;
}

/** The user and password written in a URL, percent-decoded; undefined when it has no user info. */
export function userinfoOf(url: string): Userinfo | undefined {
  const match = new RegExp(`^${WITH_USERINFO.source}`, 'i').exec(url);
  if (!match) return undefined;
  const userinfo = match[2];
  const colon = userinfo.indexOf(':');
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  if (colon < 0) return { username: decode(userinfo) };
  const password = userinfo.slice(colon + 1);
  return { username: decode(userinfo.slice(0, colon)), ...(password === MASK ? {} : { password: decode(password) }) };
}

/** The URL without its user info, as requests are made (fetch refuses URLs with credentials). */
export function withoutUserinfo(url: string): string {
  return url.replace(new RegExp(`^${WITH_USERINFO.source}`, 'i'), '$1');
}

/** `scheme://host[:port]` of a URL, lowercased, without user info: the server credentials belong to. */
export function serverOf(url: string): string | undefined {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#\s]*)/i.exec(withoutUserinfo(url));
  return match ? `${match[1]}${match[2]}`.toLowerCase() : undefined;
}
