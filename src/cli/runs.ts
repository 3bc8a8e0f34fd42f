// `xp runs`, `xp ui`, `xp sync`: the MLflow side of the command line.
import fs from 'node:fs';
import path from 'node:path';
import { XpError } from '../errors.ts';
import { runUrl, uiUrl } from '../tracking/client.ts';
import { startServer, stopKeptServer, type TrackingServer } from '../tracking/server.ts';
import { resolveTrackingUri, trackingUriFromEnv } from '../tracking/uri.ts';
import { mlflowStoreDir, runsRoot } from '../paths.ts';

const storeDir = mlflowStoreDir;

export async function runsCommand(
  experimentName: string | undefined,
  opts: { best: boolean; json: boolean; all: boolean },
): Promise<number> {
  const { formatRunsTable, bestRun } = await import('../tracking/compare.ts');
  const { storedRuns } = await import('../tracking/store.ts');
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
  const links = offline ? ' (links are paths in the MLflow UI: `xp ui` serves them)' : '';
  if (opts.best) {
    const best = bestRun(rows);
    if (!best) throw new XpError('no run has a val_accuracy yet');
    if (opts.json) console.log(JSON.stringify(best));
    else console.log(`${best.runId}\t${best.runDir ?? '-'}\tval_accuracy ${best.value.toFixed(4)}\t${best.url}`);
    return 0;
  }
  if (opts.json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  console.log(formatRunsTable(rows));
  const gone = rows.flatMap((row) => (row.gone ? [`${row.runName}: pid ${row.gone.pid}`] : []));
  if (gone.length)
    console.log(
      `\n${gone.length} run(s) still RUNNING in MLflow have lost their process (${gone.join(', ')}); the next \`xp run\` or \`xp sync\` tells MLflow how they ended.`,
    );
  console.log(`\n${rows.length} run(s) in ${offline ? path.relative(process.cwd(), from) || from : from}${links}`);
  return 0;
}

export async function uiCommand(opts: { port?: number; runDir?: string; stop?: boolean }): Promise<number> {
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
  const run = opts.runDir ? await loggedRun(opts.runDir) : undefined;
  const page = (uri: string) => (run ? runUrl(uri, run.experimentId, run.runId) : uiUrl(uri));
  const fromEnv = trackingUriFromEnv();
  if (fromEnv) {
    console.log(`MLflow UI: ${page(fromEnv)} (MLFLOW_TRACKING_URI)`);
    return 0;
  }
  const server = await startServer({ storeDir: storeDir(), port: opts.port });
  console.log(`MLflow UI: ${page(server.url)}${server.reused ? ' (already running)' : ''}`);
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

/** The MLflow run a run folder logged to (from its journal). */
async function loggedRun(runDir: string) {
  const { openJournal } = await import('../tracking/journal.ts');
  const run = fs.existsSync(runDir) ? openJournal(runDir).runRef() : undefined;
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
