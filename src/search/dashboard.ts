// `xp ui --study`: a search's study in optuna-dashboard (pinned in .venv beside Optuna), for users who know it.
// The dashboard reads the study's journal file as Optuna writes it, serving on 127.0.0.1 only.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { XpError } from '../errors.ts';
import { repoRoot } from '../paths.ts';
import { freePort } from '../util/ports.ts';
import { studyPlace } from './run.ts';

const STUDY_FILE = 'study.journal';

/**
 * The journal a target names: the journal itself, a search's folder (runs/<experiment>/search-<hash>), or an
 * experiment file whose sweep runs through a study.
 */
export async function studyFileOf(target: string): Promise<string> {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (!stat)
    throw new XpError(`xp ui --study: ${target} does not exist`, {
      hint: 'give a search experiment file, its study folder (runs/<experiment>/search-<hash>) or its study.journal',
    });
  const candidate = stat.isDirectory()
    ? path.join(target, STUDY_FILE)
    : /\.ya?ml$/i.test(target)
      ? await studyOfExperiment(target)
      : target;
  if (!fs.existsSync(candidate))
    throw new XpError(`xp ui --study: no study at ${candidate}`, {
      hint: 'a study is written when its search runs: `xp run <file>` first',
    });
  return path.resolve(candidate);
}

async function studyOfExperiment(file: string): Promise<string> {
  const { loadExperiment } = await import('../config/load.ts');
  const loaded = await loadExperiment(file);
  if (!loaded.sweep)
    throw new XpError(`xp ui --study: ${file} has no sweep, so no study`, {
      hint: 'a sweep with method: tpe or cmaes, or with early_terminate, keeps a study',
    });
  return studyPlace(loaded).file;
}

export interface Dashboard {
  url: string;
  /** The pages of the journal's studies: one per study (a search's journal holds one). */
  studies: { name: string; url: string }[];
  stop(): Promise<void>;
}

/** Starts optuna-dashboard on the journal, on 127.0.0.1, and waits until it answers. */
export async function startDashboard(file: string, port?: number, timeoutMs = 60_000): Promise<Dashboard> {
  const bin = path.join(repoRoot, '.venv', 'bin', 'optuna-dashboard');
  if (!fs.existsSync(bin))
    throw new XpError(`optuna-dashboard is not installed in ${path.dirname(bin)}`, {
      hint: '`npm run setup` installs it beside Optuna',
    });
  const at = port ?? (await freePort());
  const url = `http://127.0.0.1:${at}`;
  // wsgiref: one process, ended with this one (gunicorn, which MLflow brings, would fork workers).
  const child = spawn(
    bin,
    ['--storage-class', 'JournalFileStorage', '--host', '127.0.0.1', '--port', String(at), '--server', 'wsgiref', file],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const stop = () => stopChild(child);
  try {
    const studies = await waitForStudies(url, child, timeoutMs, () => stderr);
    return {
      url,
      studies: studies.map((s) => ({ name: s.study_name, url: `${url}/dashboard/studies/${s.study_id}` })),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function waitForStudies(
  url: string,
  child: ChildProcess,
  timeoutMs: number,
  stderr: () => string,
): Promise<{ study_id: number; study_name: string }[]> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new XpError(`optuna-dashboard ended (${child.signalCode ?? `exit code ${child.exitCode}`})`, {
        hint: stderr().trim().split('\n').slice(-3).join(' | ') || 'it printed nothing',
      });
    try {
      const response = await fetch(`${url}/api/studies`, { signal: AbortSignal.timeout(2000) });
      if (response.ok)
        return ((await response.json()) as { study_summaries: { study_id: number; study_name: string }[] })
          .study_summaries;
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new XpError(`optuna-dashboard did not answer at ${url} within ${timeoutMs / 1000} s`, {
    hint: stderr().trim().split('\n').slice(-3).join(' | ') || 'it printed nothing',
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** xp ui --study: serves the study until Ctrl-C, printing its link. */
export async function dashboardCommand(target: string, port?: number): Promise<number> {
  const file = await studyFileOf(target);
  const dashboard = await startDashboard(file, port);
  console.log(`optuna-dashboard of ${path.relative(process.cwd(), file) || file} at ${dashboard.url}:`);
  for (const study of dashboard.studies) console.log(`  study ${study.name}: ${study.url}`);
  console.log('Press Ctrl-C to stop it.');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await dashboard.stop();
  return 0;
}
