// Screenshots of the MLflow UI comparing the runs of a sweep (docs/*.png, shown in the README), taken with
// headless Chromium (Debian: apt-get install chromium). Usage: npx tsx scripts/screenshot-ui.ts [experiment]
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { createClient } from '../src/tracking/client.ts';
import { repoRoot, resolveTrackingUri } from '../src/tracking/server.ts';

const experimentName = process.argv[2] ?? 'dropout-epochs-sweep';
const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((c) => fs.existsSync(c));
if (!chromium) {
  console.error('No Chromium found: apt-get install chromium');
  process.exit(1);
}

const server = await resolveTrackingUri({ storeDir: path.join(repoRoot, 'runs', 'mlflow') });
try {
  const client = createClient(server.url);
  const experiment = await client.getExperimentByName(experimentName);
  if (!experiment) throw new Error(`no experiment "${experimentName}" in ${server.url}: run \`xp run experiments/${experimentName}.yaml\` first`);
  // Experiments made before xp marked them as model training would open in MLflow 3's GenAI views.
  await fetch(`${server.url}/api/2.0/mlflow/experiments/set-experiment-tag`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ experiment_id: experiment.experiment_id, key: 'mlflow.experimentKind', value: 'custom_model_development' }),
  });
  const runs = await client.searchRuns({ experimentIds: [experiment.experiment_id], orderBy: ['attributes.start_time DESC'] });
  const parent = runs.find((r) => r.data.tags?.some((t) => t.key === 'xp.kind' && t.value === 'sweep'));
  const trials = runs.filter((r) => parent && r.data.tags?.some((t) => t.key === 'mlflow.parentRunId' && t.value === parent.info.run_id));
  if (!trials.length) throw new Error(`experiment "${experimentName}" has no sweep with trials`);
  const ids = JSON.stringify(trials.map((r) => r.info.run_id));
  const pages = {
    'mlflow-sweep-compare.png': `${server.url}/#/compare-runs?runs=${encodeURIComponent(ids)}&experiments=${encodeURIComponent(JSON.stringify([experiment.experiment_id]))}`,
    'mlflow-sweep-runs.png': `${server.url}/#/experiments/${experiment.experiment_id}/runs?compareRunsMode=CHART`,
  };
  const outDir = path.join(repoRoot, 'docs');
  fs.mkdirSync(outDir, { recursive: true });
  for (const [file, url] of Object.entries(pages)) {
    const out = path.join(outDir, file);
    const profile = fs.mkdtempSync('/tmp/xp-chromium-');
    await execa(chromium, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, '--hide-scrollbars',
      '--window-size=1600,1100', '--virtual-time-budget=30000', `--screenshot=${out}`, url,
    ], { timeout: 120_000 });
    fs.rmSync(profile, { recursive: true, force: true });
    console.log(`${path.relative(process.cwd(), out)}: ${url}`);
  }
} finally {
  await server.stop();
}
