// The MLflow UI pages of what `xp ui` is given (a run, a sweep, an experiment), as links on the server that serves
// them now: read from MLflow each time, so they hold whichever port or host the server has today.
import { createClient, credentialsFromEnv, fromKeyValues, type MlflowClient, type Run } from './client.ts';
import { experimentRoute, experimentsRoute, runRoute, uiLink } from './links.ts';

export interface UiPage {
  /** What the page shows, for people: "run dropout=0.1", "sweep head.dropout: its trials compared". */
  label: string;
  url: string;
}

export type UiTarget =
  | { kind: 'all' }
  /** A run by its MLflow ids (a run folder's journal has them). */
  | { kind: 'run'; experimentId: string; runId: string }
  /** A sweep by its hash (tag xp.sweep_hash), in one experiment or in any. */
  | { kind: 'sweep'; sweepHash: string; experimentName?: string }
  /** An experiment by name, or a sweep by its hash when no experiment has that name. */
  | { kind: 'name'; name: string };

/** The pages of `target`; empty when MLflow has no such run, sweep or experiment. */
export async function uiPages(uri: string, target: UiTarget, client = defaultClient(uri)): Promise<UiPage[]> {
  const link = (route: string) => uiLink(uri, route);
  switch (target.kind) {
    case 'all':
      return [{ label: 'experiments', url: link(experimentsRoute()) }];
    case 'run': {
      const run = await client.getRun(target.runId).catch(() => undefined);
      if (!run) return [];
      const parentId = fromKeyValues(run.data.tags)['mlflow.parentRunId'];
      const parent = parentId ? await client.getRun(parentId).catch(() => undefined) : undefined;
      return [
        {
          label: `run ${run.info.run_name ?? run.info.run_id}`,
          url: link(runRoute(target.experimentId, target.runId)),
        },
        ...(parent ? sweepPages(parent, link) : []),
        { label: 'experiment', url: link(experimentRoute(target.experimentId)) },
      ];
    }
    case 'sweep': {
      const experiments = target.experimentName
        ? [await client.getExperimentByName(target.experimentName)].filter((e) => e !== undefined)
        : await client.searchExperiments();
      const parents = await sweepParents(
        client,
        experiments.map((e) => e.experiment_id),
        target.sweepHash,
      );
      const names = new Map(experiments.map((e) => [e.experiment_id, e.name]));
      return parents.flatMap((parent) => [
        ...sweepPages(parent, link),
        {
          label: `experiment ${names.get(parent.info.experiment_id) ?? parent.info.experiment_id}`,
          url: link(experimentRoute(parent.info.experiment_id)),
        },
      ]);
    }
    case 'name': {
      const experiment = await client.getExperimentByName(target.name);
      if (!experiment)
        return SWEEP_HASH.test(target.name) ? uiPages(uri, { kind: 'sweep', sweepHash: target.name }, client) : [];
      const parents = await sweepParents(client, [experiment.experiment_id]);
      return [
        { label: `experiment ${experiment.name}`, url: link(experimentRoute(experiment.experiment_id)) },
        ...parents.flatMap((parent) => sweepPages(parent, link)),
      ];
    }
  }
}

/** A sweep's parent run: its trials compared (the route it stores), and the parent's own page. */
function sweepPages(parent: Run, link: (route: string) => string): UiPage[] {
  const tags = fromKeyValues(parent.data.tags);
  if (tags['xp.kind'] !== 'sweep') return [];
  const name = parent.info.run_name ?? parent.info.run_id;
  const compare = tags['xp.compare_url'];
  return [
    ...(compare ? [{ label: `trials compared (${name})`, url: link(compare) }] : []),
    { label: `parent run (${name})`, url: link(runRoute(parent.info.experiment_id, parent.info.run_id)) },
  ];
}

/** What tracking/sweep.ts sweepHash gives: 16 hex digits. */
const SWEEP_HASH = /^[0-9a-f]{16}$/;

/** The sweep parents of these experiments (of one sweep, when its hash is given), newest first. */
async function sweepParents(client: MlflowClient, experimentIds: string[], sweepHash?: string): Promise<Run[]> {
  if (sweepHash !== undefined && !SWEEP_HASH.test(sweepHash)) return [];
  const parents: Run[] = [];
  // runs/search takes a bounded list of experiments: ask in groups.
  for (let index = 0; index < experimentIds.length; index += 100) {
    parents.push(
      ...(await client.searchRuns({
        experimentIds: experimentIds.slice(index, index + 100),
        filter: sweepHash ? `tags.\`xp.sweep_hash\` = '${sweepHash}'` : `tags.\`xp.kind\` = 'sweep'`,
        orderBy: ['attributes.start_time DESC'],
      })),
    );
  }
  return parents;
}

const defaultClient = (uri: string) => createClient(uri, { ...credentialsFromEnv(), maxRetries: 1 });
