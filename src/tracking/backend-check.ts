// `xp server`'s backend, checked before MLflow starts: MLflow retries a database it cannot use for minutes and says
// so only in its log. A PostgreSQL backend is connected to once with the psycopg MLflow itself uses (from .venv),
// within CONNECT_SECONDS: the server answers, accepts the user, has the database (created with --create-db), and the
// database holds no MLflow schema, or one this MLflow knows. Each failure is one TrackingError naming what is wrong.
import { execa } from 'execa';
import { TrackingError } from '../errors.ts';
import { mlflowBin, venvPython } from '../paths.ts';
import { withCredentials } from '../util/credentials.ts';
import { redactUrl } from '../util/url.ts';

/** Seconds to wait for PostgreSQL's answer (libpq's connect_timeout). */
export const CONNECT_SECONDS = 10;

/** What the check found (`problem` unset), or why the backend cannot serve. */
interface Report {
  problem?: 'driver' | 'connect' | 'auth' | 'missing' | 'create' | 'check';
  message?: string;
  driver?: string;
  database?: string;
  created?: boolean;
  /** The MLflow schema revision in the database (none when MLflow has not made its tables yet). */
  schema?: string;
  /** The revisions this MLflow knows, and its newest. */
  known?: string[];
  head?: string;
  mlflow?: string;
}

// Reads MLflow's migration files instead of importing mlflow (seconds): each names its revision and the one before.
const SCRIPT = String.raw`
import glob, importlib.metadata, importlib.util, json, os, re, sys

def done(**report):
    print(json.dumps(report))
    sys.exit(0)

url, create, timeout = os.environ['XP_BACKEND'], os.environ.get('XP_CREATE_DB') == '1', int(os.environ['XP_TIMEOUT'])
scheme = re.match(r'^postgresql(?:\+(\w+))?://', url)
driver = scheme.group(1)
if driver and driver != 'psycopg' and importlib.util.find_spec(driver) is None:
    done(problem='driver', driver=driver)
plain = 'postgresql://' + url[scheme.end():]
import psycopg
from psycopg import conninfo, sql

def connect(target):
    try:
        return psycopg.connect(target, connect_timeout=timeout, autocommit=True)
    except psycopg.OperationalError as error:
        message = str(error).strip()
        if 'timeout expired' in message:
            message = 'no answer within %d s' % timeout
        # libpq's connection errors carry no SQLSTATE to psycopg: the server's message says which it is.
        if re.search(r'database "[^"]*" does not exist', message):
            return 'missing', message
        if re.search(r'role "[^"]*" does not exist|authentication failed|no pg_hba\.conf entry', message):
            return 'auth', message
        return 'connect', message

params = conninfo.conninfo_to_dict(plain)
database = params.get('dbname') or params.get('user') or os.environ.get('USER', '')
created = False
conn = connect(plain)
if isinstance(conn, tuple) and conn[0] == 'missing' and create:
    admin = connect(conninfo.make_conninfo(plain, dbname='postgres'))
    if isinstance(admin, tuple):
        done(problem=admin[0], message=admin[1], database=database)
    try:
        admin.execute(sql.SQL('CREATE DATABASE {}').format(sql.Identifier(database)))
    except psycopg.Error as error:
        done(problem='create', message=str(error).strip(), database=database)
    finally:
        admin.close()
    created = True
    conn = connect(plain)
if isinstance(conn, tuple):
    done(problem=conn[0], message=conn[1], database=database)
with conn:
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    schema = conn.execute('SELECT version_num FROM alembic_version').fetchone() if row[0] else None

versions = os.path.join(importlib.util.find_spec('mlflow').submodule_search_locations[0], 'store', 'db_migrations', 'versions')
known, before = [], set()
for name in glob.glob(os.path.join(versions, '*.py')):
    text = open(name, encoding='utf-8').read()
    revision = re.search(r'^revision\s*=\s*[\'"](\w+)[\'"]', text, re.M)
    down = re.search(r'^down_revision\s*=\s*(.+)$', text, re.M)
    if revision:
        known.append(revision.group(1))
        before.update(re.findall(r'[\'"](\w+)[\'"]', down.group(1) if down else ''))
heads = [r for r in known if r not in before]
done(database=database, created=created, schema=schema[0] if schema else None, known=known,
     head=heads[0] if len(heads) == 1 else None, mlflow=importlib.metadata.version('mlflow'))
`;

/**
 * Checks a postgresql:// backend before MLflow is started on it; with `createDb` a missing database is created.
 * Returns a line to print when something was done (the database created), else undefined.
 */
export async function checkBackend(url: string, opts: { createDb: boolean }): Promise<string | undefined> {
  const shown = redactUrl(url);
  const server = shown.replace(/\/[^/]*$/, '');
  const at = new URL(url.replace(/^[^:]+:/, 'http:')).host || 'localhost';
  const result = await execa(venvPython(), ['-c', SCRIPT], {
    reject: false,
    // The URL (and its password) goes by the environment: a command line is visible to every user of the machine.
    env: {
      XP_BACKEND: withCredentials(url),
      XP_CREATE_DB: opts.createDb ? '1' : '',
      XP_TIMEOUT: String(CONNECT_SECONDS),
    },
    timeout: (3 * CONNECT_SECONDS + 20) * 1000,
  });
  let report: Report;
  try {
    report = JSON.parse(result.stdout.trim().split('\n').pop() ?? '') as Report;
  } catch {
    throw new TrackingError(`cannot check the backend ${shown}: ${lastLine(result.stderr) || result.shortMessage}`, {
      hint: 'Is .venv complete? (`npm run setup` installs MLflow and psycopg in it)',
    });
  }
  const db = report.database ?? '';
  const message = firstLine(report.message ?? '');
  switch (report.problem) {
    case 'driver':
      throw new TrackingError(`--backend names the driver ${report.driver}, which is not installed in .venv`, {
        hint: `Write postgresql://... without +${report.driver}: MLflow then uses psycopg 3, which is.`,
      });
    case 'connect':
      throw new TrackingError(`cannot connect to PostgreSQL at ${at}: ${message}`, {
        hint: `Is PostgreSQL running there and accepting TCP/IP connections? (pg_isready -h ${at.replace(/:(\d+)$/, ' -p $1')})`,
      });
    case 'auth':
      throw new TrackingError(`PostgreSQL at ${at} refuses user "${userOf(url)}": ${message}`, {
        hint: 'Check the user and password in --backend, and pg_hba.conf on the server.',
      });
    case 'missing':
      throw new TrackingError(`the database "${db}" does not exist on ${server}`, {
        hint: `Create it (createdb "${db}" on the server), or add --create-db and xp server creates it.`,
      });
    case 'create':
      throw new TrackingError(`cannot create the database "${db}" on ${server}: ${message}`, {
        hint: `Create it as a user who may (createdb "${db}"), or grant CREATEDB to "${userOf(url)}".`,
      });
  }
  const { schema, known = [], head, mlflow = '?' } = report;
  if (schema && !known.includes(schema))
    throw new TrackingError(
      `the database "${db}" holds MLflow schema ${schema}, which MLflow ${mlflow} in .venv does not know (a newer MLflow made it)`,
      { hint: 'Serve it with the MLflow that made it, or give xp server another database.' },
    );
  if (schema && head && schema !== head)
    throw new TrackingError(
      `the database "${db}" holds MLflow schema ${schema}, older than MLflow ${mlflow}'s (${head})`,
      { hint: `Back the database up, then upgrade it: ${mlflowBin()} db upgrade '${shown}'` },
    );
  return report.created ? `Created the database "${db}" on ${server}` : undefined;
}

function userOf(url: string): string {
  return decodeURIComponent(new URL(url.replace(/^[^:]+:/, 'http:')).username) || process.env.USER || '';
}

/** libpq's first line without what the message already says: `Connection refused`, `role "x" does not exist`. */
const firstLine = (text: string): string =>
  (text.split('\n')[0] ?? '')
    .replace(/^connection failed: /, '')
    .replace(/^connection to server at [^,]+, port \d+ failed: /, '')
    .replace(/^FATAL:\s+/, '');
const lastLine = (text: string): string => text.trim().split('\n').pop() ?? '';
