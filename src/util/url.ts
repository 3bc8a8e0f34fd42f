// How a URL is shown and stored, decided once: the password of its user info (user:password@) is masked, in every
// scheme (http, https, redis, postgresql+psycopg2, ...), so it never reaches a terminal, a log, a file or a server.
// A user without a password is masked whole (`https://***@host`): that is how a token is given in a URL
// (`https://TOKEN@host`, sent as Basic TOKEN: by requests and curl), and xp cannot tell a token from a name. Database
// URLs are the exception: there a lone user is a role name (`postgresql://mlflow@db/mlflow`, its password in
// ~/.pgpass or PGPASSWORD), shown as written so that errors name it.
// Parsed by hand rather than with `new URL`: database URLs are not WHATWG URLs, and a password may hold an '@'.

export const MASK = '***';

// scheme://  userinfo (up to the last '@' of the authority)  @
const WITH_USERINFO = /([a-z][a-z0-9+.-]*:\/\/)([^/?#\s@]*(?:@[^/?#\s@]*)*)@/gi;

// Schemes whose lone user is a role name, not a secret.
const ROLE_SCHEMES = /^(postgres(ql)?|mysql|mariadb|mssql|oracle)([+:]|$)/i;

/** Whether a user without a password in a URL of this scheme (`http://`, ...) is a secret to mask. */
function loneUserIsSecret(scheme: string): boolean {
  return !ROLE_SCHEMES.test(scheme);
}

/**
 * The URL with its password replaced by ***: `https://me:***@host/x`, and a lone user (a token) too:
 * `https://***@host/x`; a URL without user info, or any other text, unchanged.
 */
export function redactUrl(url: string): string {
  return redactText(url);
}

/** Every URL inside a text (an error message, a flag such as `--set tracking.uri=...`) with its password masked. */
export function redactText(text: string): string {
  return text.replace(WITH_USERINFO, (whole, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    if (colon >= 0) return `${scheme}${userinfo.slice(0, colon)}:${MASK}@`;
    return userinfo && loneUserIsSecret(scheme) ? `${scheme}${MASK}@` : whole;
  });
}

export interface Userinfo {
  /** The mask when the URL is a lone user's (a token's) as shown. */
  username: string;
  /** undefined when the URL has none, or only the mask; '' for a lone user that is a secret (a token). */
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
  if (colon < 0) {
    // A lone user is sent as requests and curl send it: Basic `user:`.
    if (userinfo === MASK || !loneUserIsSecret(match[1])) return { username: decode(userinfo) };
    return { username: decode(userinfo), password: '' };
  }
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
