// A sweep's comparison in the MLflow UI: the experiment's runs page showing the sweep's trials only, as charts of the
// sweep's metric: a parallel-coordinates plot of the swept parameters against each trial's result, the metric per
// epoch, and the result per trial. It is a view of MLflow's own "Share" button: the page's state as JSON in the
// experiment tag `mlflow.sharedViewState.<key>`, opened by `?viewStateShareKey=<key>` (MLflow 3.17:
// experiment-page/components/header/ExperimentGetShareLinkModal.tsx writes it, hooks/useSharedExperimentViewState.ts
// reads it, plain JSON or deflated). The state is written once per sweep and the link stays valid as trials finish:
// it selects them by their parent run, not by a list.
import crypto from 'node:crypto';
import type { Goal } from '../config/metrics.ts';
import { resultMetricKey } from '../events.ts';
import { sharedViewRoute } from './links.ts';

export const SHARED_VIEW_TAG_PREFIX = 'mlflow.sharedViewState.';

// Tableau 10: ten colours told apart at a glance. MLflow picks a run's colour from a hash of its id, which gives
// a sweep's trials near twins; the tag its colour picker writes sets one instead.
const TRIAL_COLORS = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
];

/** The tags of a sweep's trial `index` (1-based): its colour in the MLflow UI's charts and lists. */
export const trialTags = (index: number): Record<string, string> => ({
  'mlflow.runColor': TRIAL_COLORS[(index - 1) % TRIAL_COLORS.length],
});

export interface SweepViewInput {
  experimentId: string;
  parentRunId: string;
  /** The sweep's metric (val_accuracy, ...) and which way is better. */
  metric: string;
  goal: Goal;
  /** The swept parameters, as logged (head.dropout, ...). */
  parameters: string[];
}

export interface SweepView {
  /** The experiment tag that holds the view, and its value. */
  tag: { key: string; value: string };
  /** The view's route (relative to the tracking server). */
  route: string;
}

export function sweepView(input: SweepViewInput): SweepView {
  const value = JSON.stringify(sweepViewState(input));
  // As MLflow names a shared view: the sha256 of its state.
  const key = crypto.createHash('sha256').update(value).digest('hex');
  return { tag: { key: `${SHARED_VIEW_TAG_PREFIX}${key}`, value }, route: sharedViewRoute(input.experimentId, key) };
}

/** The experiment page's search facets and UI state (MLflow's ExperimentPageSearchFacetsState and ExperimentPageUIState). */
export function sweepViewState({ parentRunId, metric, goal, parameters }: SweepViewInput) {
  // The figure the sweep ranks its trials by: the saved model's score (final_val_accuracy) where there is one.
  const result = resultMetricKey(metric) ?? metric;
  const section = 'xp-sweep';
  const chart = { runsCountToCompare: 100, metricSectionId: section, deleted: false, isGenerated: false };
  return {
    searchFilter: `tags.mlflow.parentRunId = '${parentRunId}'`,
    orderByKey: `metrics.\`${result}\``,
    orderByAsc: goal === 'minimize',
    startTime: 'ALL',
    lifecycleFilter: 'Active',
    modelVersionFilter: 'All Runs',
    datasetsFilter: [],
    selectedColumns: [...parameters.map((p) => `params.\`${p}\``), `metrics.\`${result}\``],
    // MLflow hides all but 10 runs from charts by default.
    runsHiddenMode: 'SHOW_ALL',
    isAccordionReordered: true,
    compareRunSections: [
      {
        uuid: section,
        name: `${metric} over ${parameters.join(' x ')}`,
        display: true,
        isReordered: true,
        deleted: false,
        isGenerated: false,
        columns: 3,
        cardHeight: 440,
      },
      // MLflow adds a chart for every other metric to its own section: shown folded.
      {
        uuid: 'xp-metrics',
        name: 'Model metrics',
        display: false,
        isReordered: false,
        deleted: false,
        isGenerated: true,
      },
    ],
    compareRunCharts: [
      {
        ...chart,
        uuid: 'xp-parallel',
        type: 'PARALLEL',
        selectedParams: parameters,
        selectedMetrics: [result],
        showAllRuns: true,
      },
      {
        ...chart,
        uuid: 'xp-epochs',
        type: 'LINE',
        metricKey: metric,
        lineSmoothness: 0,
        xAxisKey: 'step',
        xAxisScaleType: 'linear',
        scaleType: 'linear',
        selectedXAxisMetricKey: '',
        yAxisKey: 'metric',
        yAxisExpressions: [],
        ignoreOutliers: false,
        useGlobalXaxisKey: true,
        useGlobalLineSmoothing: true,
        range: {},
      },
      { ...chart, uuid: 'xp-result', type: 'BAR', metricKey: result },
    ],
  };
}
