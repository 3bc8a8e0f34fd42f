// The tracking side of `xp run`: the server (given, or the embedded one started for the command), one MLflow
// tracker per trial behind the run-events callbacks, and what to tell the user about undelivered records.
import path from 'node:path';
import type { Experiment } from '../config/types.ts';
import { XpError } from '../errors.ts';
import type { Callbacks } from '../events.ts';
import { mlflowStoreDir } from '../paths.ts';
import { createClient, credentialsFromEnv, type MlflowClient } from './client.ts';
import { resolveTrackingUri } from './uri.ts';
import { createMlflowTracker, type MlflowTracker } from './tracker.ts';
import { closeAbandonedRuns } from './delivery.ts';
import { embeddedStore } from './server.ts';

export type TrackingSession = Awaited<ReturnType<typeof openTracking>>;

/** `tags`: added to every run this session starts (a queue worker's name and attempt). */
export async function openTracking(base: Experiment, log: (line: string) => void, tags?: Record<string, string>) {
  const storeDir = mlflowStoreDir();
  const server = await resolveTrackingUri({ experimentUri: base.tracking.uri, storeDir }).catch((error) => {
    throw new XpError(`cannot reach or start MLflow: ${error.message}`, {
      cause: error,
      hint: 'run with --no-track to train without tracking, or set MLFLOW_TRACKING_URI to a running server',
    });
  });
  const uri = server.url;
  const embedded = server.source === 'embedded';
  const experimentName = base.tracking.experiment_name ?? base.name;
  log(
    `MLflow: ${uri} (${embedded ? `embedded, store ${path.relative(process.cwd(), storeDir) || '.'}` : server.source})`,
  );
  const trackers = new Map<string, MlflowTracker>();
  return {
    uri,
    experimentName,
    /** The embedded server on this machine's SQLite store (no other machine can log to it). */
    embedded,
    /** The embedded server started by this command stops with it: its links need `xp ui` afterwards. */
    stopsWithCommand: embedded && !server.reused,
    /** MLflow ids and URL of a local run directory logged by this process. */
    ids(runDir: string) {
      const t = trackers.get(runDir);
      return { mlflowRunId: t?.mlflowRunId(), experimentId: t?.mlflowExperimentId(), url: t?.runUrl() };
    },
    /** `runTags`: more tags for this run (a sweep trial's colour in the UI). */
    callbacks(file: string, parentRunId?: string, runTags?: Record<string, string>): Callbacks {
      let created: MlflowTracker | undefined;
      return {
        onRunStart(info) {
          // The embedded store is on this machine: artifacts are hard-linked into it rather than copied.
          const artifactStore = embedded ? path.join(storeDir, 'artifacts') : undefined;
          created = createMlflowTracker({
            uri,
            experimentName,
            runDir: info.runDir,
            sourceFile: file,
            parentRunId,
            artifactStore,
            log,
            tags: { ...tags, ...runTags },
          });
          trackers.set(info.runDir, created);
          return created.onRunStart?.(info);
        },
        onEpochEnd: (epoch, logs) => created?.onEpochEnd?.(epoch, logs),
        onRunEnd: (info) => created?.onRunEnd?.(info),
      };
    },
    /** Closes in MLflow the runs under `runsRoot` that a killed process left RUNNING on this server (delivery.ts). */
    closeAbandoned: (runsRoot: string) => closeAbandonedRuns(runsRoot, { uri, store: embeddedStore(uri) }, log),
    /** Says which run folders still hold records for `xp sync`. */
    async reportPending(runDirs: string[]) {
      for (const runDir of runDirs) {
        const pending = await trackers.get(runDir)?.pending();
        if (pending)
          log(`${pending} tracking record(s) of ${runDir} not yet in MLflow; \`xp sync ${runDir}\` sends them`);
      }
    },
    /** Leaves the embedded server this command started up after it ends (--keep-ui). */
    keep: () => server.keep?.(),
    close: () => server.stop(),
  };
}

/** One attempt with a short timeout: a dead server costs seconds, not minutes of retries. */
export function quickClient(uri: string, env: NodeJS.ProcessEnv = process.env): MlflowClient {
  const credentials = credentialsFromEnv(env);
  return createClient(uri, {
    ...credentials,
    maxRetries: 0,
    timeoutMs: Math.min(credentials.timeoutMs ?? 10_000, 10_000),
    warn: () => {},
  });
}
