// `xp server --backend postgresql://...` on a backend that cannot serve: a database that does not exist, a port
// where nothing listens, one that accepts and never answers, a user PostgreSQL does not know, and databases holding
// another MLflow's schema. MLflow itself retries such a backend for minutes, saying nothing clear: xp checks it
// first and fails within seconds naming what is wrong; `--create-db` creates a missing database. The databases are
// created and dropped on the machine's PostgreSQL (XP_TEST_POSTGRES_URL), as the queue tests do.
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin, freePort, POSTGRES, removeTempDirs, root, tempDir, until } from '../queue/helpers.ts';

const tmp = tempDir('hostile-server');
const psql = (sql: string, db = 'postgres') =>
  execa('psql', [`${POSTGRES}/${db}`, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql]);
const names = { missing: `xp_hostile_missing_${process.pid}`, created: `xp_hostile_created_${process.pid}` };
const schemas = { newer: `xp_hostile_newer_${process.pid}`, older: `xp_hostile_older_${process.pid}` };
let silent: net.Server;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  for (const db of [...Object.values(names), ...Object.values(schemas)])
    await psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}, 60_000);

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent?.close(resolve));
  for (const db of [...Object.values(names), ...Object.values(schemas)])
    await psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
  removeTempDirs();
}, 60_000);

/** `xp server` on `backend`; resolves when it exits (or is killed after 90 s), with how long it took. */
async function serve(backend: string, extra: string[] = []) {
  const started = Date.now();
  const port = await freePort();
  const result = await execa(
    process.execPath,
    [bin, 'server', '--backend', backend, '--artifacts', path.join(tmp, 'artifacts'), '--port', String(port), ...extra],
    { reject: false, cwd: root, all: true, timeout: 90_000, killSignal: 'SIGKILL' },
  );
  return { ...result, ms: Date.now() - started };
}

const noMlflow = (output: string) => {
  expect(output).not.toMatch(/Uvicorn|mlflow\.store|Operation will be retried/);
  expect(output).not.toMatch(/\n\s+at /);
};

describe('a backend that cannot serve is named within seconds, before MLflow starts', () => {
  it('a database that does not exist: its name, and how to create it', async () => {
    const r = await serve(`${POSTGRES}/${names.missing}`);
    expect(r.timedOut).toBe(false);
    expect(r.ms).toBeLessThan(20_000);
    expect(r.exitCode).toBe(1);
    expect(r.all).toContain(`xp server: the database "${names.missing}" does not exist on ${POSTGRES}`);
    expect(r.all).toContain('--create-db');
    noMlflow(r.all ?? '');
  }, 120_000);

  it('a port where nothing listens, and one that never answers: the address, in seconds', async () => {
    const dead = await freePort();
    const refused = await serve(`postgresql://postgres@127.0.0.1:${dead}/mlflow`);
    expect(refused.ms).toBeLessThan(20_000);
    expect(refused.exitCode).toBe(1);
    expect(refused.all).toMatch(
      new RegExp(`xp server: cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${dead}: .*Connection refused`),
    );
    noMlflow(refused.all ?? '');
    const port = (silent.address() as net.AddressInfo).port;
    const mute = await serve(`postgresql://postgres@127.0.0.1:${port}/mlflow`);
    expect(mute.ms).toBeLessThan(30_000);
    expect(mute.exitCode).toBe(1);
    expect(mute.all).toContain(`xp server: cannot connect to PostgreSQL at 127.0.0.1:${port}: no answer within 10 s`);
    noMlflow(mute.all ?? '');
  }, 120_000);

  it('a user PostgreSQL does not know, with the password masked', async () => {
    const url = new URL(POSTGRES);
    const r = await serve(`postgresql://nobody_${process.pid}:secret@${url.host}/postgres`);
    expect(r.exitCode).toBe(1);
    expect(r.all).toContain(`xp server: PostgreSQL at ${url.host} refuses user "nobody_${process.pid}"`);
    expect(r.all).not.toContain('secret');
    noMlflow(r.all ?? '');
  }, 120_000);

  it("a database holding another MLflow's schema: newer is refused, older is told to upgrade", async () => {
    for (const db of Object.values(schemas)) await psql(`CREATE DATABASE ${db}`);
    await psql('CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)', schemas.newer);
    await psql("INSERT INTO alembic_version VALUES ('0123456789ab')", schemas.newer);
    await psql('CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)', schemas.older);
    // MLflow's first schema revision.
    await psql("INSERT INTO alembic_version VALUES ('451aebb31d03')", schemas.older);
    const newer = await serve(`${POSTGRES}/${schemas.newer}`);
    expect(newer.exitCode).toBe(1);
    expect(newer.all).toMatch(
      new RegExp(
        `xp server: the database "${schemas.newer}" holds MLflow schema 0123456789ab, which MLflow [\\d.]+ in \\.venv does not know`,
      ),
    );
    noMlflow(newer.all ?? '');
    const older = await serve(`${POSTGRES}/${schemas.older}`);
    expect(older.exitCode).toBe(1);
    expect(older.all).toMatch(
      new RegExp(
        `xp server: the database "${schemas.older}" holds MLflow schema 451aebb31d03, older than MLflow [\\d.]+'s`,
      ),
    );
    expect(older.all).toContain('mlflow db upgrade');
    noMlflow(older.all ?? '');
  }, 120_000);
});

describe('--create-db', () => {
  it('creates the missing database and serves on it', async () => {
    const port = await freePort();
    let out = '';
    const proc = execa(
      process.execPath,
      [
        bin,
        'server',
        '--backend',
        `${POSTGRES}/${names.created}`,
        '--create-db',
        '--artifacts',
        path.join(tmp, 'artifacts'),
        '--host',
        '127.0.0.1',
        '--port',
        String(port),
      ],
      { reject: false, cwd: root, all: true, timeout: 240_000, killSignal: 'SIGKILL' },
    );
    proc.all?.on('data', (chunk) => (out += chunk));
    try {
      await until('the database', () => out.includes('Created the database'), 60_000);
      expect(out).toContain(`Created the database "${names.created}" on ${POSTGRES}`);
      expect((await psql(`SELECT 1 FROM pg_database WHERE datname = '${names.created}'`)).stdout).toBe('1');
      // MLflow starts on it (answering takes its workers long on a busy machine: the queue tests wait for that).
      await until('MLflow', () => out.includes(`Uvicorn running on http://127.0.0.1:${port}`), 120_000);
    } finally {
      proc.kill('SIGTERM');
      await proc;
    }
  }, 300_000);
});
