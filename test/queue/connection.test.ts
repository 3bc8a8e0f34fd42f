// The queue's URL: what `--queue` and XP_QUEUE_URL accept, and what a bad one says (no Redis needed).
import path from 'node:path';
import { execa } from 'execa';
import { expect, test } from 'vitest';
import { connectionOf, queueUrl, shownUrl } from '../../src/queue/connection.ts';

const bin = path.resolve(import.meta.dirname, '../../bin/xp.js');

test('redis URLs become ioredis options: host, port, database, credentials, TLS', () => {
  expect(connectionOf('redis://queue-host')).toEqual({
    host: 'queue-host',
    port: 6379,
    db: 0,
    maxRetriesPerRequest: null,
  });
  expect(connectionOf('rediss://me:s%40cret@10.0.0.5:6380/3')).toEqual({
    host: '10.0.0.5',
    port: 6380,
    db: 3,
    username: 'me',
    password: 's@cret',
    tls: {},
    maxRetriesPerRequest: null,
  });
  expect(shownUrl('redis://me:secret@host:6379/1')).toBe('redis://me:***@host:6379/1');
  expect(queueUrl(undefined, { XP_QUEUE_URL: 'redis://a' })).toBe('redis://a');
  expect(queueUrl('redis://b', { XP_QUEUE_URL: 'redis://a' })).toBe('redis://b');
  expect(queueUrl(undefined, {})).toBeUndefined();
});

test('a queue URL that is not Redis is refused naming the flag, the value and an example', () => {
  expect(() => connectionOf('http://127.0.0.1:6379')).toThrow(
    '--queue must be a Redis URL; got "http://127.0.0.1:6379"',
  );
  expect(() => connectionOf('redis://host/x', 'XP_QUEUE_URL')).toThrow(
    'XP_QUEUE_URL must be a Redis URL (the database "x" is not a number); got "redis://host/x"',
  );
});

test('xp worker without a queue, xp queue with a bad one and xp server with a bad backend exit 1 with one line and a hint, no stack trace', async () => {
  const env = { XP_QUEUE_URL: '' };
  const worker = await execa(process.execPath, [bin, 'worker'], { reject: false, env });
  expect(worker.exitCode).toBe(1);
  expect(worker.stderr).toContain('xp worker: xp worker needs the queue: --queue redis://host:6379 (or XP_QUEUE_URL)');
  expect(worker.stderr).not.toMatch(/\n\s+at /);
  const status = await execa(process.execPath, [bin, 'queue', 'status', '--queue', 'redis://:pw@127.0.0.1:1/0x'], {
    reject: false,
    env,
  });
  expect(status.exitCode).toBe(1);
  expect(status.stderr).toContain(
    'xp queue: --queue must be a Redis URL (the database "0x" is not a number); got "redis://:***@127.0.0.1:1/0x"',
  );
  const server = await execa(
    process.execPath,
    [bin, 'server', '--backend', 'mongodb://me:pw@db/mlflow', '--artifacts', '/nonexistent/never-created'],
    { reject: false, env },
  );
  expect(server.exitCode).toBe(1);
  expect(server.stderr).toBe(
    'xp server: --backend must be a database URL MLflow can store runs in; got "mongodb://me:***@db/mlflow"\n  e.g. postgresql://mlflow:secret@db-host:5432/mlflow (the database must exist: createdb mlflow)',
  );
});
