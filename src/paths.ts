// Where xp keeps things, decided once. xp is a command, not a folder: run folders and the embedded MLflow store
// are where the user works (./runs, as MLflow's ./mlruns and Hydra's outputs/), while the MLflow venv, the
// native kernels and the caches stay with the installation and the user's cache, whichever folder xp runs from.
// Environment variables override each default; the README lists them.
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The installation: the clone `npm link` or `npm install -g` points at (sources, .venv, native/build). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Run folders: runs/<experiment>/<run-id>/ under the current folder (XP_RUNS_DIR). */
export const runsRoot = (): string => path.resolve(process.env.XP_RUNS_DIR || 'runs');

/** The embedded MLflow server's store: SQLite database, artifacts, server log. */
export const mlflowStoreDir = (): string => path.join(runsRoot(), 'mlflow');

/** Downloads (libtensorflow, wheels, Keras weights) cached across clones (XP_CACHE_DIR). */
export const cacheDir = (): string => path.resolve(process.env.XP_CACHE_DIR || path.join(os.homedir(), '.cache', 'xp'));

/** Files fetched by URL (experiment files, the files they extend, weights), content-addressed. */
export const remoteCacheDir = (): string => path.join(cacheDir(), 'remote');

/** Data sets given by url are looked up and unpacked here (XP_DATA_DIR). */
export const dataDir = (): string => path.resolve(process.env.XP_DATA_DIR || path.join(cacheDir(), 'datasets'));

/** The project's MLflow, installed by setup. */
export const mlflowBin = (): string => path.join(repoRoot, '.venv', 'bin', 'mlflow');

/** The Python of that virtual environment (psycopg, with which xp server checks its backend). */
export const venvPython = (): string => path.join(repoRoot, '.venv', 'bin', 'python');

/** The lock (xp.lock) of an experiment: beside a local file; in the current folder for one given by URL. */
export const lockFileFor = (experiment: string): string =>
  /^https?:\/\//i.test(experiment)
    ? path.resolve('xp.lock')
    : path.join(path.dirname(path.resolve(experiment)), 'xp.lock');
