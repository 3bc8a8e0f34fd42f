#!/usr/bin/env node
// Idempotent project setup, run by `npm install` (postinstall): native TensorFlow for tfjs-node and a
// project-local Python virtual environment with a pinned MLflow. A second run only verifies.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as libtf from './setup/libtensorflow.mjs';
import * as nativeOps from './setup/native-ops.mjs';

export const MLFLOW_VERSION = '3.17.2';
// MLflow's SQLAlchemy opens postgresql:// with psycopg 3: `xp server --backend postgresql://...` needs it.
export const PSYCOPG_VERSION = '3.3.9';
// A sweep with method: tpe is an Optuna study (src/search/optuna_driver.py runs in this .venv).
export const OPTUNA_VERSION = '5.1.0';
// Beside Optuna: CMA-ES for method: cmaes (Optuna's CmaEsSampler imports it), matplotlib for the search's plots
// logged to MLflow (Optuna's matplotlib backend; MLflow pulls it in too, pinned here so the plots do not move with
// MLflow's range), optuna-dashboard for `xp ui --study`. Parameter importances also need scikit-learn (fANOVA's
// random forest), which MLflow already requires.
export const SEARCH_PACKAGES = { cmaes: '0.13.1', matplotlib: '3.11.2', 'optuna-dashboard': '0.21.0' };

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tfjsNodeDir = path.join(root, 'node_modules', '@tensorflow', 'tfjs-node');
const log = (line) => console.log(`[xp setup] ${line}`);

async function step(name, fn) {
  const started = Date.now();
  log(`${name} ...`);
  try {
    const detail = await fn();
    log(`${name}: ${detail} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (error) {
    const hint = error.hint ? `\n  what to do: ${error.hint}` : '';
    console.error(`[xp setup] FAILED at "${name}": ${error.message}${hint}`);
    process.exit(1);
  }
}

async function nativeTensorflow() {
  try {
    return `already in place, ${describe(libtf.verify(root))}`;
  } catch {
    // not built yet, or built against something gone: provision and build
  }
  const cache = libtf.cacheRoot();
  const url = process.env.XP_LIBTENSORFLOW_URL || libtf.TARBALL_URL;
  let source;
  try {
    source = await libtf.fromTarball(url, cache, { log, timeoutMs: 20_000 });
  } catch (error) {
    log(
      `official libtensorflow tarball unavailable (${error.cause?.code || error.message}); using the TensorFlow wheel from PyPI`,
    );
    try {
      source = await libtf.fromWheel(cache, { log, python: pythonBin() });
    } catch (wheelError) {
      throw Object.assign(
        new Error(`no libtensorflow: tarball (${error.message}) and wheel (${wheelError.message}) both failed`),
        {
          hint: 'check network access to PyPI, or set XP_LIBTENSORFLOW_URL to a reachable libtensorflow-cpu-linux-x86_64 tarball',
        },
      );
    }
  }
  log(`libtensorflow from ${source.source}`);
  libtf.stage(source, tfjsNodeDir);
  libtf.buildBinding(tfjsNodeDir, { log });
  try {
    return describe(libtf.verify(root));
  } catch (error) {
    throw Object.assign(error, {
      hint: 'xp never falls back to the slow wasm or pure-JS backends; see the build output above',
    });
  }
}

// `npm link` and `npm install -g <clone>` link the clone and run this script without installing its dependencies:
// they are installed here as `npm ci` in the clone installs them, whose own run of this script is skipped.
function nodeDependencies() {
  if (fs.existsSync(path.join(tfjsNodeDir, 'package.json'))) return 'already in place';
  const env = { ...process.env, XP_SETUP_NESTED: '1' };
  // A global install's settings would make the nested npm install globally.
  for (const key of Object.keys(env)) if (/^npm_config_(global|prefix|location)$/i.test(key)) delete env[key];
  log(`npm ci in ${root}`);
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit', env });
  if (r.status !== 0)
    throw Object.assign(new Error(`npm ci exited with ${r.status ?? r.signal}`), {
      hint: `run \`npm install\` in ${root}`,
    });
  return 'installed with npm ci';
}

// xp's own kernels (src/accel/native-ops.ts), compiled against the libtensorflow just staged.
async function nativeKernels() {
  const built = nativeOps.build(root, tfjsNodeDir);
  return `${built}; ${nativeOps.verify(root)}`;
}

const describe = (v) => `backend ${v.backend}, tfjs ${v.tfjs}`;

function pythonBin() {
  for (const candidate of [process.env.XP_PYTHON, 'python3', 'python']) {
    if (candidate && spawnSync(candidate, ['--version']).status === 0) return candidate;
  }
  throw Object.assign(new Error('no python3 found'), {
    hint: 'install Python 3.10+ with pip and venv (Debian: apt-get install python3-venv)',
  });
}

async function mlflowVenv() {
  const venv = path.join(root, '.venv');
  const mlflow = path.join(venv, 'bin', 'mlflow');
  const version = () => spawnSync(mlflow, ['--version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const python = path.join(venv, 'bin', 'python');
  const psycopg = () =>
    spawnSync(python, ['-c', 'import psycopg; print(psycopg.__version__)'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const optuna = () =>
    spawnSync(python, ['-c', 'import optuna; print(optuna.__version__)'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const pinned = Object.entries(SEARCH_PACKAGES).map(([name, v]) => `${name}==${v}`);
  // Installed versions of the search's packages, as pip names them (read from their metadata, nothing imported).
  const searchPackages = () =>
    spawnSync(
      python,
      [
        '-c',
        'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))',
        ...Object.keys(SEARCH_PACKAGES),
      ],
      { encoding: 'utf8' },
    ).stdout?.trim() ?? '';
  if (
    fs.existsSync(mlflow) &&
    version().includes(MLFLOW_VERSION) &&
    psycopg() === PSYCOPG_VERSION &&
    optuna() === OPTUNA_VERSION &&
    searchPackages() === pinned.join(' ')
  )
    return `already in place, ${version()}, psycopg ${psycopg()}, optuna ${optuna()}, ${searchPackages()}`;
  if (!fs.existsSync(python)) {
    run(pythonBin(), ['-m', 'venv', venv], 'create the virtual environment');
  }
  log(
    `pip install mlflow==${MLFLOW_VERSION} psycopg[binary]==${PSYCOPG_VERSION} optuna==${OPTUNA_VERSION} ${pinned.join(' ')} into .venv (a minute or two the first time)`,
  );
  run(
    python,
    [
      '-m',
      'pip',
      'install',
      '--quiet',
      '--disable-pip-version-check',
      `mlflow==${MLFLOW_VERSION}`,
      `psycopg[binary]==${PSYCOPG_VERSION}`,
      `optuna==${OPTUNA_VERSION}`,
      ...pinned,
    ],
    'pip install mlflow',
  );
  const v = version();
  if (!v.includes(MLFLOW_VERSION)) throw new Error(`.venv/bin/mlflow --version printed "${v}"`);
  if (psycopg() !== PSYCOPG_VERSION) throw new Error(`psycopg ${PSYCOPG_VERSION} does not import in .venv`);
  if (optuna() !== OPTUNA_VERSION) throw new Error(`optuna ${OPTUNA_VERSION} does not import in .venv`);
  if (searchPackages() !== pinned.join(' '))
    throw new Error(`.venv holds ${searchPackages() || 'none'} of ${pinned.join(' ')}`);
  return `${v}, psycopg ${psycopg()}, optuna ${optuna()}, ${searchPackages()}`;
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) {
    throw Object.assign(new Error(`${what} failed: ${(r.stderr || '').trim().split('\n').slice(-3).join(' ')}`), {
      hint: 'check network access to PyPI; remove .venv and run `npm run setup` again',
    });
  }
}

if (
  process.argv[1] &&
  path.resolve(process.argv[1]) === fileURLToPath(import.meta.url) &&
  !process.env.XP_SETUP_NESTED
) {
  const started = Date.now();
  await step('Node dependencies', nodeDependencies);
  await step('native TensorFlow for tfjs-node', nativeTensorflow);
  await step('xp kernels for TensorFlow (native/xp_ops.cc)', nativeKernels);
  await step(`MLflow ${MLFLOW_VERSION} in .venv`, mlflowVenv);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
