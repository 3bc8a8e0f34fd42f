// Where the queue lives: a redis:// URL (`--queue`, else XP_QUEUE_URL), read once into the connection options
// BullMQ hands to ioredis. Every xp process on the queue uses the same queue name and lock settings. Every command
// reaches Redis once first (openQueueOnce): a Redis that never answered, or lacks the URL's database, is an error
// within seconds; only a Redis that answered once is waited for (reconnected to) when it goes away.
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

/** Seconds the first contact with the queue's Redis may take: connecting, its answer, selecting the database. */
export const FIRST_CONTACT_SECONDS = 10;

type BullQueue = InstanceType<typeof import('bullmq').Queue>;

/**
 * A BullMQ queue on `url` whose commands fail instead of waiting for Redis (for `xp queue`), once Redis has answered
 * and selected the URL's database; otherwise an XpError saying what is wrong, within FIRST_CONTACT_SECONDS.
 */
export async function openQueueOnce(url: string): Promise<BullQueue> {
  const { Queue } = await import('bullmq');
  const connection = connectionOf(url);
  const queue = new Queue(QUEUE_NAME, {
    connection: {
      ...connection,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      retryStrategy: () => null,
      connectTimeout: FIRST_CONTACT_SECONDS * 1000,
      // What ioredis waits for a closing socket before destroying it (2 s by default), which the process waits too.
      disconnectTimeout: 200,
    } as never,
  });
  // ioredis reports a failed SELECT of the URL's database as an event and goes on in database 0: it is asked again below.
  queue.on('error', () => {});
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(unreachable(url, `no answer within ${FIRST_CONTACT_SECONDS} s`)),
      FIRST_CONTACT_SECONDS * 1000,
    );
  });
  try {
    await Promise.race([
      (async () => {
        await queue.waitUntilReady().catch((error: Error) => {
          throw unreachable(url, error.message);
        });
        await selectDatabase(await queue.client, url, connection.db);
      })(),
      late,
    ]);
    return queue;
  } catch (error) {
    await letGo([queue]);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Reaches the queue's Redis once (see openQueueOnce); the commands that then stay connected call it first. */
export async function reachQueue(url: string): Promise<void> {
  await letGo([await openQueueOnce(url)]);
}

type Redis = Awaited<BullQueue['client']>;

// Redis refuses a database beyond its `databases` setting; ioredis would go on in database 0, the wrong queue.
async function selectDatabase(redis: Redis, url: string, db: number): Promise<void> {
  try {
    await redis.runCommand('select', [db]);
  } catch (error) {
    if (!/DB index is out of range/i.test((error as Error).message)) throw unreachable(url, (error as Error).message);
    const count = Number(((await redis.runCommand('config', ['GET', 'databases']).catch(() => [])) as string[])[1]);
    const server = shownUrl(url).replace(/\/\d+$/, '');
    throw new XpError(
      `the queue's database ${db} does not exist on ${server}${count ? ` (it has ${count}: 0 to ${count - 1})` : ''}`,
      {
        hint: `Give a database Redis has at the end of the URL (${server}/0), or raise \`databases\` in its redis.conf.`,
      },
    );
  }
}

function unreachable(url: string, why: string): XpError {
  return new XpError(`cannot reach the queue at ${shownUrl(url)}: ${why}`, {
    hint: `Is Redis running there, and does it answer? (redis-cli -u ${shownUrl(url)} ping)`,
  });
}

/**
 * Closes BullMQ queues, workers and event streams, waiting at most `ms` for Redis; then drops their connections,
 * so that nothing goes on reconnecting to a Redis that is gone and the process can end.
 */
export async function letGo(
  objects: { close(): Promise<void>; disconnect(): Promise<void> }[],
  ms = 2000,
): Promise<void> {
  await Promise.all(
    objects.map(async (object) => {
      const closed = object.close().then(
        () => true,
        () => false,
      );
      if (!(await Promise.race([closed, sleep(ms).then(() => false)])))
        await Promise.race([object.disconnect().catch(() => {}), sleep(ms)]);
    }),
  );
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

function badUrl(url: string, from: string, why?: string): XpError {
  return new XpError(`${from} must be a Redis URL${why ? ` (${why})` : ''}; got "${shownUrl(url)}"`, {
    hint: 'e.g. redis://127.0.0.1:6379 or redis://:password@queue-host:6379/2',
  });
}
