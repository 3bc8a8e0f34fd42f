// Where the queue lives: a redis:// URL (`--queue`, else XP_QUEUE_URL), read once into the connection options
// BullMQ hands to ioredis. Every xp process on the queue uses the same queue name and lock settings.
import { XpError } from '../errors.ts';
import { keepCredentials, withCredentials } from '../util/credentials.ts';
import { redactUrl } from '../util/url.ts';

/** The BullMQ queue every sweep's jobs go to; a job's data names its sweep. */
export const QUEUE_NAME = 'xp-trials';

export interface QueueConnection {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  tls?: Record<string, never>;
  /** BullMQ's workers block on Redis: ioredis must retry forever (and reconnect) rather than fail a command. */
  maxRetriesPerRequest: null;
}

/** The queue's URL (as shown: its password masked) from the flag or XP_QUEUE_URL; undefined when neither is given. */
export function queueUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return keepCredentials(flag || env.XP_QUEUE_URL) || undefined;
}

/**
 * redis://[user:password@]host[:port][/db] (rediss:// for TLS) as ioredis options; anything else is refused. A
 * masked password is the one given with the URL (util/credentials.ts).
 */
export function connectionOf(url: string, from = '--queue'): QueueConnection {
  let parsed: URL;
  try {
    parsed = new URL(withCredentials(url));
  } catch {
    throw badUrl(url, from);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw badUrl(url, from);
  const db = parsed.pathname.replace(/^\//, '');
  if (db && !/^\d+$/.test(db)) throw badUrl(url, from, `the database "${db}" is not a number`);
  return {
    host: parsed.hostname || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 6379,
    db: db ? Number(db) : 0,
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/** The URL without its password, to print. */
export const shownUrl = redactUrl;

/**
 * XP_QUEUE_LOCK_SECONDS (default 30, BullMQ's own): how long a job stays with a worker after its last sign of life.
 * A worker that dies (or whose machine does) loses its job to another worker after about this long. The worker's
 * event loop does no training (each job trains in a process of its own), so its lock is renewed on time however
 * long TensorFlow holds the trainer.
 */
export function lockMs(env: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(env.XP_QUEUE_LOCK_SECONDS);
  return (env.XP_QUEUE_LOCK_SECONDS && Number.isFinite(seconds) && seconds >= 2 ? seconds : 30) * 1000;
}

function badUrl(url: string, from: string, why?: string): XpError {
  return new XpError(`${from} must be a Redis URL${why ? ` (${why})` : ''}; got "${shownUrl(url)}"`, {
    hint: 'e.g. redis://127.0.0.1:6379 or redis://:password@queue-host:6379/2',
  });
}
