// Credentials written in URLs (`https://me:secret@host/...`, `redis://:secret@host`), kept out of everything xp
// shows, stores or sends elsewhere. A URL enters xp through `keepCredentials` (the command line, the environment, an
// experiment file's values): the password stays in this process, and what flows on is the URL as it is shown, with
// the password masked (util/url.ts). The few places that talk to the server take it back: `authorizationFor` (an
// HTTP request's Basic header, the URL itself requested without user info) and `withCredentials` (a client that
// takes the URL whole, as ioredis and MLflow's database store do). xp's own child processes (--parallel trainers,
// a worker's job processes) inherit them through the environment, never through argv or a file.
import { MASK, redactText, serverOf, userinfoOf, withoutUserinfo } from './url.ts';

/** Internal: the URLs with credentials this process knows, passed on to its child processes (JSON list). */
const ENV = 'XP_CREDENTIALS';

interface Known {
  username: string;
  /** '' for a lone user in the URL (a token), shown as `***@`. */
  password: string;
}

// Per server (scheme://host:port): the users and passwords given for it, first given first.
const known = new Map<string, Known[]>();
let inherited = false;

/**
 * Remembers the passwords of the URLs in `text` (a URL, or a flag such as `--set tracking.uri=...`) for this process
 * and its children, and returns the text as it is shown and stored: passwords masked.
 */
export function keepCredentials(text: string): string;
export function keepCredentials(text: string | undefined): string | undefined;
export function keepCredentials(text: string | undefined): string | undefined {
  if (!text) return text;
  const masked = redactText(text);
  if (masked === text) return text;
  for (const url of text.match(/[a-z][a-z0-9+.-]*:\/\/[^\s]+/gi) ?? []) remember(url);
  return masked;
}

function remember(url: string): void {
  const info = userinfoOf(url);
  const server = serverOf(url);
  if (info?.password === undefined || !server) return;
  load();
  const list = known.get(server) ?? [];
  if (list.some((k) => k.username === info.username && k.password === info.password)) return;
  list.push({ username: info.username, password: info.password });
  known.set(server, list);
  const urls = [...known].flatMap(([s, users]) =>
    users.map((u) => s.replace('://', `://${encodeURIComponent(u.username)}:${encodeURIComponent(u.password)}@`)),
  );
  process.env[ENV] = JSON.stringify(urls);
}

// What the parent process knew, once.
function load(): void {
  if (inherited) return;
  inherited = true;
  let urls: unknown;
  try {
    urls = JSON.parse(process.env[ENV] ?? '[]');
  } catch {
    return;
  }
  if (Array.isArray(urls)) for (const url of urls) if (typeof url === 'string') remember(url);
}

/** The user and password for a URL: its own, else those given for its server (for the same user, if it names one). */
export function credentialsFor(url: string): Known | undefined {
  const info = userinfoOf(url);
  if (info?.password !== undefined) return { username: info.username, password: info.password };
  const server = serverOf(url);
  if (!server) return undefined;
  load();
  const list = known.get(server) ?? [];
  if (!info) return list[0];
  // `***@`: the token given for that server.
  if (info.username === MASK) return list.find((k) => k.password === '');
  return list.find((k) => k.username === info.username);
}

/** `Basic ...` for a request to `url`, from its credentials (as requests and curl send user info), if any. */
export function authorizationFor(url: string): string | undefined {
  const c = credentialsFor(url);
  return c && `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** What a request is made to: the URL without user info (fetch refuses credentials in URLs). */
export const requestUrl = withoutUserinfo;

/**
 * fetch() of a URL as shown: requested without user info, with its credentials as Basic (fetch drops the header on
 * a redirect to another server).
 */
export function fetchWithCredentials(url: string, init: RequestInit = {}): Promise<Response> {
  const authorization = authorizationFor(url);
  const headers = new Headers(init.headers);
  if (authorization) headers.set('authorization', authorization);
  return fetch(requestUrl(url), { ...init, headers });
}

/** The URL with its password back in, for a client that takes the URL whole; never to be shown or stored. */
export function withCredentials(url: string): string {
  const info = userinfoOf(url);
  if (info?.password !== undefined) return url;
  const c = credentialsFor(url);
  if (!c || !info) return url;
  if (info.username === MASK) return url.replace(`://${MASK}@`, `://${encodeURIComponent(c.username)}@`);
  return url.replace(`:${MASK}@`, `:${encodeURIComponent(c.password)}@`);
}
