// The README's pictures of the MLflow UI (docs/*.png), taken as a user sees the pages: the links xp prints for a
// sweep (`xp ui <experiment file>`: its trials compared; `xp runs --best`: the best trial's page), each opened in
// headless Chromium with a new, empty profile and photographed once it has drawn, with nothing clicked, typed or set
// in the page (scripts/ui-browser.ts, which the browser tests in test/ui/ use too).
// Usage, after `xp run experiments/dropout-epochs-sweep.yaml` (the same XP_RUNS_DIR or MLFLOW_TRACKING_URI):
//   npx tsx scripts/screenshot-ui.ts [experiment.yaml]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { loadExperiment } from '../src/config/load.ts';
import { repoRoot } from '../src/paths.ts';
import { openInFreshProfile, untilShown, type Viewport } from './ui-browser.ts';

// Sized for the README: GitHub scales pictures down to its column.
const viewport: Viewport = { width: 1920, height: 1080 };
const xpBin = path.join(repoRoot, 'bin', 'xp.js');

/** The output of `xp <args>`: all of it, or up to `until` for a command that keeps running (then stopped). */
function xp(args: string[], until?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [xpBin, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk;
      if (until && out.includes(until)) {
        resolve(out);
        // A server `xp ui` started stops with it: the pictures are taken while it runs.
        stopAfterShots.push(() => child.kill('SIGINT'));
      }
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`xp ${args.join(' ')}: exit ${code}\n${out}`)),
    );
  });
}
const stopAfterShots: (() => void)[] = [];

async function shoot(url: string, shown: string[], file: string): Promise<void> {
  const { page, close } = await openInFreshProfile(url, viewport);
  try {
    await untilShown(page, shown);
    await page.screenshot({ path: file });
    console.log(`${path.relative(process.cwd(), file)}: ${url}`);
  } finally {
    await close();
  }
}

async function main(experimentFile: string): Promise<void> {
  const loaded = await loadExperiment(experimentFile);
  if (!loaded.sweep) throw new Error(`${experimentFile} is not a sweep`);
  const printed = await xp(['ui', experimentFile], 'Press Ctrl-C');
  const compare = /trials compared \([^)]*\): +(http\S+)/.exec(printed)?.[1];
  if (!compare) throw new Error(`\`xp ui ${experimentFile}\` printed no comparison; run the sweep first:\n${printed}`);
  const runs = JSON.parse(await xp(['runs', loaded.base.name, '--json'])) as { runName: string }[];
  const best = JSON.parse(await xp(['runs', loaded.base.name, '--best', '--json'])) as { runId: string; url?: string };
  const docs = path.join(repoRoot, 'docs');
  await shoot(
    compare,
    [...runs.map((run) => run.runName), 'Parallel Coordinates', 'Step'],
    path.join(docs, 'mlflow-sweep-compare.png'),
  );
  const bestName = (runs as { runName: string; runId?: string }[]).find((run) => run.runId === best.runId)?.runName;
  if (best.url && bestName) await shoot(best.url, [bestName, 'Model metrics'], path.join(docs, 'mlflow-run.png'));
}

try {
  await main(process.argv[2] ?? path.join(repoRoot, 'experiments', 'dropout-epochs-sweep.yaml'));
} finally {
  for (const stop of stopAfterShots) stop();
}
