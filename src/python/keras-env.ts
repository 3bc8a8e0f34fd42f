// The project's Keras environment: .venv-keras in the installation, pinned by keras-requirements.txt
// (tensorflow-cpu, which brings Keras 3, and MLflow). `xp export` to Keras or SavedModel, `xp register` (and
// `mlflow models serve` of what it registers) and the bench's Keras baseline use it; it is made on first use, never
// by `npm install`, since most users need none of them and it is large (the README says how large).
// A stamp holding the requirements' hash makes the second call a file read instead of a pip run.
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { XpError } from '../errors.ts';
import { withFileLock } from '../lock/mutex.ts';
import { cacheDir, repoRoot } from '../paths.ts';

const REQUIREMENTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'keras-requirements.txt');
const STAMP = '.xp-requirements.sha256';

/** The Keras environment's bin folder (python, mlflow, uvicorn): first on PATH to run its commands. */
export const kerasBin = (): string => path.join(repoRoot, '.venv-keras', 'bin');

const requirementsHash = () => createHash('sha256').update(fs.readFileSync(REQUIREMENTS)).digest('hex');

/** Creates `.venv-keras` if missing, installs keras-requirements.txt when it changed; returns its python. */
export async function ensureKerasVenv(): Promise<string> {
  const venv = path.join(repoRoot, '.venv-keras');
  const python = path.join(venv, 'bin', 'python');
  const hash = requirementsHash();
  const stamp = path.join(venv, STAMP);
  const ready = () => fs.existsSync(python) && readOrEmpty(stamp) === hash;
  if (ready()) return python;
  // Several xp processes may start at once (tests, a sweep's children): one installs, the others wait for it.
  return withFileLock(
    venv,
    async () => {
      if (ready()) return python;
      if (!fs.existsSync(python)) {
        const base = await systemPython();
        log(`creating ${venv} with ${base}`);
        await run(base, ['-m', 'venv', venv], 'create the virtual environment');
      }
      // The TensorFlow wheel that scripts/setup fetched for libtensorflow spares downloading it a second time.
      const wheels = path.join(cacheDir(), 'wheels');
      const findLinks = fs.existsSync(wheels) ? ['--find-links', wheels] : [];
      log(
        `pip install -r ${path.relative(repoRoot, REQUIREMENTS)} into ${venv} (tensorflow-cpu, Keras 3 and MLflow: about 2.3 GB and 1-3 minutes, once)`,
      );
      await run(
        python,
        ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...findLinks, '-r', REQUIREMENTS],
        'pip install the Keras environment',
      );
      fs.writeFileSync(stamp, hash);
      return python;
    },
    { timeoutMs: INSTALL_MS, staleMs: INSTALL_MS },
  );
}

/** The longest an install may take on a slow network before a waiting process takes over its lock. */
const INSTALL_MS = 20 * 60_000;

async function systemPython(): Promise<string> {
  for (const candidate of [process.env.XP_PYTHON, 'python3', 'python']) {
    if (!candidate) continue;
    const r = await execa(candidate, ['--version'], { reject: false });
    if (r.exitCode === 0) return candidate;
  }
  throw new XpError('Keras needs Python 3 to create .venv-keras, but no python3 or python is on PATH.', {
    hint: 'install Python 3.10-3.13 with venv (Debian: apt-get install python3-venv), or point XP_PYTHON at one',
  });
}

async function run(file: string, args: string[], what: string): Promise<void> {
  const r = await execa(file, args, { reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', all: true });
  if (r.exitCode !== 0) {
    const tail = String(r.all ?? '')
      .trim()
      .split('\n')
      .slice(-5)
      .join('\n');
    throw new XpError(`Could not ${what}: \`${file} ${args.join(' ')}\` exited with ${r.exitCode}.\n${tail}`, {
      hint: `check that PyPI is reachable; remove ${path.join(repoRoot, '.venv-keras')} and try again`,
    });
  }
}

function readOrEmpty(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function log(message: string): void {
  process.stderr.write(`[keras] ${message}\n`);
}
