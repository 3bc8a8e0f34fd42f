// The links xp prints, opened as a user opens them: a real (tiny) sweep logs to the real embedded MLflow, and each
// link it printed, then those `xp runs` and `xp ui` print, opens in headless Chromium with a new, empty profile
// (scripts/ui-browser.ts, the same code that takes the README's pictures). The assertions are on the page itself:
// the model-training view of what the link names, the sweep's metric in the comparison's plot and charts, the
// trials' names and results on screen, and no pop-up or panel over them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { Page } from 'playwright-core';
import { afterAll, expect, test } from 'vitest';
import {
  chartLabels,
  openInFreshProfile,
  overlap,
  pageFacts,
  uncovered,
  untilShown,
} from '../../scripts/ui-browser.ts';
import { createClient, fromKeyValues, type Run } from '../../src/tracking/client.ts';
import { stopKeptServer } from '../../src/tracking/server.ts';
import { shared } from '../train/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-ui-')));
const runs = path.join(tmp, 'runs');
const env = { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '', MLFLOW_EXPERIMENT_NAME: '' };
const xp = (args: string[]) => execa(process.execPath, [bin, ...args], { reject: false, cwd: tmp, env });
const viewport = { width: 1440, height: 900 };

const file = path.join(tmp, 'sweep.yaml');
fs.writeFileSync(
  file,
  `name: ui-links
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [64, 64], batch_size: 4, max_per_class: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4], dropout: 0.2}
training: {epochs: 2, steps_per_epoch: 2, validation_steps: 1}
sweep:
  head.dropout: [0.1, 0.5]
`,
);

afterAll(async () => {
  await stopKeptServer(path.join(runs, 'mlflow')); // whatever a failed test left up
  fs.rmSync(tmp, { recursive: true, force: true });
}, 60_000);

const tags = (run: Run) => fromKeyValues(run.data.tags);
const metric = (run: Run, key: string) => Number(run.data.metrics?.find((m) => m.key === key)?.value);
const linkAfter = (text: string, label: string) => new RegExp(`${label}(http://\\S+)`).exec(text)?.[1];

/** Opens `url` in a fresh profile, waits for `shown`, and checks what every page xp links to must be. */
async function visit(url: string, shown: string[], check: (page: Page) => Promise<void>): Promise<void> {
  const { page, close } = await openInFreshProfile(url, viewport);
  try {
    await untilShown(page, shown);
    const facts = await pageFacts(page);
    // The model-training side of MLflow's UI: its experiment navigation, not the GenAI one (Overview, Traces,
    // Evaluation runs, ...).
    expect(facts.sideNav, facts.url).toContain('Model registry');
    expect(facts.sideNav, facts.url).not.toMatch(/Overview|Observability|Evaluation runs/);
    expect(facts.text, facts.url).not.toMatch(/Evaluations|Detect Issues/);
    // Nothing pops up over the page, and MLflow's Assistant, which it opens beside the page on a local server's
    // first visit, takes none of the page's own area.
    expect(facts.overlays, facts.url).toEqual([]);
    expect(facts.main, facts.url).toBeDefined();
    if (facts.assistant) expect(overlap(facts.assistant, facts.main!), facts.url).toBe(false);
    for (const text of shown.filter((t) => !/^\d/.test(t))) expect(await uncovered(page, text), text).toBe(true);
    await check(page);
  } finally {
    await close();
  }
}

let compare: string | undefined;
let trials: Run[] = [];

test('the links a sweep prints open, in a fresh profile, the model-training views they name', async () => {
  const r = await xp(['run', file, '--keep-ui', '--no-backup', '--quiet']);
  expect(r.exitCode, r.stderr + r.stdout).toBe(0);
  const server = /stays up at (http:\/\/127\.0\.0\.1:\d+)/.exec(r.stdout)?.[1];
  compare = linkAfter(r.stdout, 'Compare the trials in MLflow: ');
  const parentLink = linkAfter(r.stdout, 'Sweep parent run: ');
  const runLinks = [...r.stdout.matchAll(/ {2}MLflow: (http:\/\/\S+)/g)].map((m) => m[1]);
  expect([server, compare, parentLink, runLinks.length], r.stdout).toEqual([
    expect.any(String),
    expect.any(String),
    expect.any(String),
    2,
  ]);

  const client = createClient(server!);
  const experiment = (await client.getExperimentByName('ui-links'))!;
  const all = await client.searchRuns({ experimentIds: [experiment.experiment_id] });
  const parent = all.find((run) => tags(run)['xp.kind'] === 'sweep')!;
  trials = all.filter((run) => tags(run)['mlflow.parentRunId'] === parent.info.run_id);
  const names = trials.map((run) => run.info.run_name!).sort();
  expect(names).toEqual(['dropout=0.1', 'dropout=0.5']);
  // Each trial has a colour of its own in the charts, not MLflow's hash-picked near twins.
  expect(new Set(trials.map((run) => tags(run)['mlflow.runColor'])).size).toBe(2);
  // What the parent stores is relative to the server: it outlives this server's port.
  expect(tags(parent)['xp.compare_url']).toBe(compare!.slice(server!.length + 1));

  // The comparison: the trials (and only they) as charts of the sweep's metric, val_accuracy: the parallel
  // coordinates plot of the swept parameter against each trial's result, val_accuracy per epoch, the results.
  await visit(compare!, [...names, 'val_accuracy over head.dropout', 'Parallel Coordinates', 'Step'], async (page) => {
    expect(page.url()).toMatch(new RegExp(`#/experiments/${experiment.experiment_id}/runs\\?.*compareRunsMode=CHART`));
    expect(await page.getByText('sweep head.dropout', { exact: true }).count()).toBe(0);
    const plot = await chartLabels(page, 'Parallel Coordinates');
    expect(plot).toEqual(expect.arrayContaining(['head.dropout', 'final_val_accuracy']));
    expect(plot).not.toContain('loss');
    expect(await chartLabels(page, 'val_accuracy')).toContain('Step');
    const results = await chartLabels(page, 'final_val_accuracy');
    for (const trial of trials) expect(results).toContain(metric(trial, 'final_val_accuracy').toFixed(2));
  });

  // Each trial's page and the parent's: the run page, under the experiment's runs.
  for (const [link, name] of [
    ...runLinks.map((link) => [link, trials.find((t) => link.includes(t.info.run_id))!.info.run_name!]),
    [parentLink!, 'sweep head.dropout'],
  ]) {
    await visit(link, [name, 'Model metrics'], async (page) => {
      expect(await page.getByRole('heading', { name }).isVisible()).toBe(true);
    });
  }
}, 400_000);

test('`xp runs` shows run ids and folders and, while a server runs, live links; `xp ui <sweep>` brings them back', async () => {
  expect(compare, 'the first test printed the compare link').toBeDefined();
  const listed = await xp(['runs', 'ui-links']);
  expect(listed.exitCode, listed.stderr).toBe(0);
  for (const trial of trials) {
    const folder = path.relative(tmp, tags(trial)['xp.run_dir']);
    expect(listed.stdout).toMatch(
      new RegExp(`^${trial.info.run_id.slice(0, 8)}  ${trial.info.run_name}\\s+FINISHED .* ${folder}$`, 'm'),
    );
  }
  const experimentLink = linkAfter(listed.stdout, 'MLflow: experiment ui-links: ');
  expect(experimentLink, listed.stdout).toBeDefined();
  await visit(experimentLink!, ['sweep head.dropout', 'matching runs'], async (page) => {
    expect(page.url()).toMatch(/#\/experiments\/\d+\/runs\?/);
  });

  // The server stops; the store's file still answers `xp runs`, without links that lead nowhere.
  expect((await xp(['ui', '--stop'])).stdout).toContain('Stopped the MLflow server');
  const offline = await xp(['runs', 'ui-links']);
  expect(offline.stdout).not.toContain('http://');
  expect(offline.stdout).toContain('`xp ui` starts one and prints its links');

  // `xp ui <experiment file>` starts it again, on the port it had, and prints the sweep's links.
  const ui = execa(process.execPath, [bin, 'ui', file], { reject: false, cwd: tmp, env });
  try {
    const printed = await new Promise<string>((resolve, reject) => {
      let out = '';
      ui.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('Press Ctrl-C')) resolve(out);
      });
      ui.on('exit', () => reject(new Error(`xp ui exited: ${out}`)));
    });
    const again = linkAfter(printed, 'trials compared \\(sweep head\\.dropout\\): +');
    expect(again, printed).toBe(compare);
    await visit(again!, [...trials.map((t) => t.info.run_name!), 'Parallel Coordinates'], async (page) => {
      expect(await chartLabels(page, 'Parallel Coordinates')).toContain('final_val_accuracy');
    });
  } finally {
    ui.kill('SIGINT');
    await ui;
  }
}, 300_000);
