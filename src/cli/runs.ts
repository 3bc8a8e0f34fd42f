// `xp runs`, `xp ui`, `xp sync`: the MLflow side of the command line.
import fs from 'node:fs';
import path from 'node:path';
import { XpError } from '../errors.ts';
import type { UiTarget } from '../tracking/pages.ts';
import { startServer, stopKeptServer, type TrackingServer } from '../tracking/server.ts';
import { resolveTrackingUri, trackingUriFromEnv } from '../tracking/uri.ts';
import { mlflowStoreDir, runsRoot } from '../paths.ts';

const storeDir = mlflowStoreDir;

export async function runsCommand(
  experimentName: string | undefined,
  opts: { best: boolean; json: boolean; all: boolean; wide: boolean },
): Promise<number> {
  const { formatRunsTable, bestRun } = await import('../tracking/compare.ts');
  const { storedRuns } = await import('../tracking/store.ts');
  const { experimentRoute, uiLink } = await import('../tracking/links.ts');
  // No server is started: a running one answers, else the embedded store's file is read directly.
  const { rows, from, offline } = await storedRuns({
    uri: trackingUriFromEnv(),
    storeDir: storeDir(),
    experimentName,
    includeSweeps: opts.all,
  });
  if (experimentName && !rows.length) {
    throw new XpError(`no runs of experiment "${experimentName}" in MLflow at ${from}`, {
      hint: 'xp runs (without a name) lists every experiment',
    });
  }
  if (opts.best) {
    const best = bestRun(rows);
    if (!best) throw new XpError('no run has a val_accuracy yet');
    if (opts.json) console.log(JSON.stringify(best));
    else console.log(`${best.runId}\t${best.runDir ?? '-'}\tval_accuracy ${best.value.toFixed(4)}\t${best.url ?? '-'}`);
    return 0;
  }
  if (opts.json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  console.log(formatRunsTable(rows, { wide: opts.wide }));
  const gone = rows.flatMap((row) => (row.gone ? [`${row.runName}: pid ${row.gone.pid}`] : []));
  if (gone.length)
    console.log(
      `\n${gone.length} run(s) still RUNNING in MLflow have lost their process (${gone.join(', ')}); the next \`xp run\` or \`xp sync\` tells MLflow how they ended.`,
    );
  console.log(`\n${rows.length} run(s) in ${offline ? path.relative(process.cwd(), from) || from : from}`);
  if (offline) {
    if (rows.length)
      console.log(
        "No MLflow server runs on this store: `xp ui` starts one and prints its links (`xp ui <folder>`: a run's).",
      );
    return 0;
  }
  const experiments = new Map(rows.map((row) => [row.experimentId, row.experimentName]));
  for (const [id, name] of experiments) console.log(`MLflow: experiment ${name}: ${uiLink(from, experimentRoute(id))}`);
  if (!opts.wide && rows.length) console.log("(--wide: each run's link)");
  return 0;
}

/**
 * The MLflow UI of the local store (started, or the running one) or of MLFLOW_TRACKING_URI, and the links of what
 * `target` names: a run folder, an experiment file (its sweep), an experiment name or a sweep's id.
 */
export async function uiCommand(opts: { port?: number; target?: string; stop?: boolean }): Promise<number> {
  if (opts.stop) {
    const ended = await stopKeptServer(storeDir());
    console.log(
      !ended
        ? 'No MLflow server runs on this store.'
        : ended.stopped
          ? `Stopped the MLflow server at ${ended.url}.`
          : `The MLflow server at ${ended.url} is no longer kept; it stops when the xp commands using it end.`,
    );
    return 0;
  }
  const { target, experimentUri } = await uiTarget(opts.target);
  const given = experimentUri ?? trackingUriFromEnv();
  const server = given
    ? { url: given.replace(/\/+$/, ''), reused: true, stop: async () => {} }
    : await startServer({ storeDir: storeDir(), port: opts.port });
  try {
    const { uiPages } = await import('../tracking/pages.ts');
    const pages = await uiPages(server.url, target);
    if (!pages.length)
      throw new XpError(`MLflow at ${server.url} has no run, sweep or experiment "${opts.target}"`, {
        hint: 'give a run folder (runs/<experiment>/<run-id>), an experiment file or name, or a sweep id; `xp runs` lists them',
      });
    const where = given
      ? experimentUri
        ? ' (tracking.uri)'
        : ' (MLFLOW_TRACKING_URI)'
      : server.reused
        ? ' (already running)'
        : '';
    console.log(`MLflow UI at ${server.url}${where}:`);
    const width = Math.max(...pages.map((page) => page.label.length));
    for (const page of pages) console.log(`  ${`${page.label}:`.padEnd(width + 1)} ${page.url}`);
  } catch (error) {
    await server.stop();
    throw error;
  }
  if (server.reused) return 0;
  console.log('Press Ctrl-C to stop it.');
  // The server process is unref'd: a timer keeps this process alive until Ctrl-C and the server's shutdown.
  const keepAlive = setInterval(() => {}, 60_000);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.stop();
  clearInterval(keepAlive);
  return 0;
}

/** What `xp ui`'s argument names, and the server an experiment file logs to, if it says. */
async function uiTarget(arg: string | undefined): Promise<{ target: UiTarget; experimentUri?: string }> {
  if (arg === undefined) return { target: { kind: 'all' } };
  const stat = fs.statSync(arg, { throwIfNoEntry: false });
  if (stat?.isDirectory()) {
    const run = await loggedRun(arg);
    return { target: { kind: 'run', experimentId: run.experimentId, runId: run.runId } };
  }
  if (stat?.isFile() || /^https?:\/\//i.test(arg)) {
    const { loadExperiment } = await import('../config/load.ts');
    const { sweepHash } = await import('../tracking/sweep.ts');
    const loaded = await loadExperiment(arg);
    const experimentName =
      process.env.MLFLOW_EXPERIMENT_NAME || loaded.base.tracking.experiment_name || loaded.base.name;
    return {
      target: loaded.sweep
        ? { kind: 'sweep', sweepHash: sweepHash(loaded), experimentName }
        : { kind: 'name', name: experimentName },
      experimentUri: loaded.base.tracking.uri,
    };
  }
  return { target: { kind: 'name', name: arg } };
}

/** The MLflow run a run folder logged to (from its journal). */
async function loggedRun(runDir: string) {
  const { openJournal } = await import('../tracking/journal.ts');
  const run = openJournal(runDir).runRef();
  if (!run)
    throw new XpError(`${runDir} is not a run folder that reached MLflow`, {
      hint: 'pass runs/<experiment>/<run-id> of a tracked run; `xp sync <run-dir>` sends a run that could not reach MLflow',
    });
  return run;
}

/**
 * Each journal goes to the server its run was logging to (the embedded store's server, started if needed, or the
 * recorded URL) unless `to` names another; journals from before the URL was recorded go to today's server.
 */
export async function syncCommand(runDirs: string[], opts: { to?: string } = {}): Promise<number> {
  const { recordedTarget, journaledRunDirs } = await import('../tracking/journal.ts');
  const { syncRunDir } = await import('../tracking/delivery.ts');
  // Without arguments, every run folder with a journal: delivered records are skipped by the cursor.
  const dirs = runDirs.length ? runDirs : journaledRunDirs(runsRoot());
  if (!dirs.length) {
    console.log('Nothing to sync: no run directory has tracking records.');
    return 0;
  }
  if (opts.to !== undefined && !/^https?:\/\//i.test(opts.to)) {
    throw new XpError(`--to must be an http(s) URL of an MLflow server; got "${opts.to}".`, {
      hint: 'e.g. xp sync runs/quickstart/<run-id> --to http://127.0.0.1:5000',
    });
  }
  const servers = new Map<string, Promise<TrackingServer>>();
  const serverOf = (key: string, start: () => Promise<TrackingServer>) => {
    let server = servers.get(key);
    if (!server) {
      server = start();
      servers.set(key, server);
    }
    return server;
  };
  let failed = 0;
  try {
    for (const dir of dirs) {
      try {
        const { store, uri } = recordedTarget(dir);
        const server = opts.to
          ? { url: opts.to.replace(/\/+$/, '') }
          : store
            ? await serverOf(store, () => startServer({ storeDir: store }))
            : uri
              ? { url: uri }
              : await serverOf('', () => resolveTrackingUri({ storeDir: storeDir() }));
        const r = await syncRunDir(dir, { uri: server.url, log: (line) => console.log(`${dir}: ${line}`) });
        console.log(
          `${dir}: sent ${r.sent} record(s) to ${server.url}${r.pending ? `, ${r.pending} still pending` : ''}`,
        );
        if (r.pending) failed++;
      } catch (error) {
        failed++;
        console.error(`${dir}: ${(error as Error).message}`);
        const hint = (error as XpError).hint;
        if (hint) console.error(`  ${hint}`);
      }
    }
  } finally {
    for (const server of servers.values())
      await server.then(
        (s) => s.stop(),
        () => {},
      );
  }
  return failed ? 1 : 0;
}
