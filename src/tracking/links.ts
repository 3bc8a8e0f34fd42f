// Every MLflow UI link xp prints or stores, built here. A route is relative to the tracking server (what tags
// store: it stays true when the server moves to another port or host); a link is a route on a server's URL.
//
// MLflow 3.17's UI opens every page on its GenAI side unless told otherwise: which side a page shows comes from the
// `workflowType` URL parameter, else the GenAI / Model training toggle the browser last stored (localStorage
// `mlflow.workflowType_v1`, GenAI in a fresh profile); the experiment's `mlflow.experimentKind` tag is not read for
// it (mlflow/server/js/src/common/contexts/WorkflowTypeContext.tsx). Every route carries the parameter.

import { withoutUserinfo } from '../util/url.ts';
/** The UI's model-training side (the value of its `workflowType` URL parameter). */
export const MODEL_TRAINING = 'workflowType=machine_learning';

/** One run's page. */
export const runRoute = (experimentId: string, runId: string): string =>
  `#/experiments/${experimentId}/runs/${runId}?${MODEL_TRAINING}`;

/** The runs table of one experiment. */
export const experimentRoute = (experimentId: string): string => `#/experiments/${experimentId}/runs?${MODEL_TRAINING}`;

/** The list of experiments. */
export const experimentsRoute = (): string => `#/experiments?${MODEL_TRAINING}`;

/**
 * The experiment's runs as charts, in the view an experiment tag of MLflow's "Share" button holds (see
 * sweep-view.ts): MLflow's way to link to a configured view of runs.
 */
export const sharedViewRoute = (experimentId: string, shareKey: string): string =>
  `#/experiments/${experimentId}/runs?viewStateShareKey=${shareKey}&compareRunsMode=CHART&${MODEL_TRAINING}`;

/** A registered model's version in the Model Registry. */
export const modelVersionRoute = (name: string, version: string): string =>
  `#/models/${encodeURIComponent(name)}/versions/${version}?${MODEL_TRAINING}`;

/** MLflow's compare-runs page (JSON lists in the query), for runs that have no sweep view. */
export function compareRunsRoute(experimentIds: string[], runIds: string[]): string {
  const list = (values: string[]) => encodeURIComponent(JSON.stringify([...new Set(values)]));
  return `#/compare-runs?runs=${list(runIds)}&experiments=${list(experimentIds)}&${MODEL_TRAINING}`;
}

/**
 * A route on the server at `uri`. A stored link from before routes were stored (an absolute URL) keeps its route
 * and takes the server given here.
 */
export function uiLink(uri: string, route: string): string {
  const hash = route.indexOf('#');
  return `${withoutUserinfo(uri).replace(/\/+$/, '')}/${hash >= 0 ? route.slice(hash) : route}`;
}

/** A run's page on the server at `uri`. */
export const runUrl = (uri: string, experimentId: string, runId: string): string =>
  uiLink(uri, runRoute(experimentId, runId));
