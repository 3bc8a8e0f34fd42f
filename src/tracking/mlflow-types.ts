// The MLflow REST API's records as xp uses them, its error, and its request limits: plain data, no I/O.
import { TrackingError } from '../errors.ts';
import { withoutUserinfo } from '../util/url.ts';

export interface Credentials {
  username?: string;
  password?: string;
  token?: string;
}

export interface ClientOptions extends Credentials {
  /** MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 as in MLflow 3.17. */
  maxRetries?: number;
  /** MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, default 2 (seconds). */
  backoffFactor?: number;
  /** MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, default 1 (seconds). */
  backoffJitter?: number;
  /** MLFLOW_HTTP_REQUEST_TIMEOUT, default 120 s: one attempt, connect included. */
  timeoutMs?: number;
  /** Epoch ms after which no attempt starts and none goes on (read at each attempt): bounds retries as a whole. */
  deadline?: () => number;
  /** Aborts every request and backoff wait of this client at once. */
  signal?: AbortSignal;
  warn?: (message: string) => void;
}

export type RunStatus = 'RUNNING' | 'SCHEDULED' | 'FINISHED' | 'FAILED' | 'KILLED';

export interface KeyValue {
  key: string;
  value: string;
}

export interface Metric {
  key: string;
  value: number;
  timestamp: number;
  step: number;
}

export interface Experiment {
  experiment_id: string;
  name: string;
  artifact_location?: string;
  lifecycle_stage?: string;
  tags?: KeyValue[];
}

export interface RunInfo {
  run_id: string;
  experiment_id: string;
  run_name?: string;
  status: RunStatus;
  start_time?: number;
  end_time?: number;
  artifact_uri: string;
  lifecycle_stage?: string;
}

export interface Run {
  info: RunInfo;
  data: { metrics?: Metric[]; params?: KeyValue[]; tags?: KeyValue[] };
  inputs?: { dataset_inputs?: DatasetInput[] };
}

export interface DatasetInput {
  tags?: KeyValue[];
  dataset: { name: string; digest: string; source_type: string; source: string; schema?: string; profile?: string };
}

export interface FileInfo {
  path: string;
  is_dir: boolean;
  file_size?: number;
}

export interface SearchRunsOptions {
  experimentIds: string[];
  filter?: string;
  orderBy?: string[];
  /** Stop after this many runs; default all. */
  maxResults?: number;
  viewType?: 'ACTIVE_ONLY' | 'DELETED_ONLY' | 'ALL';
}

export interface Batch {
  metrics?: Metric[];
  params?: KeyValue[];
  tags?: KeyValue[];
}

/** An MLflow error answer (or a transport failure, errorCode 'UNREACHABLE'). */
export class MlflowError extends TrackingError {
  errorCode: string;
  status?: number;
  constructor(message: string, options: { errorCode: string; status?: number; cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'TrackingError';
    this.errorCode = options.errorCode;
    this.status = options.status;
  }
}

// log-batch limits of MLflow's validation.py.
export const BATCH_LIMITS = { metrics: 1000, params: 100, tags: 100, total: 1000 } as const;

/** Greedy split into requests within MLflow's per-request limits, params then tags then metrics. */
export function chunkBatch(batch: Required<Batch>): Required<Batch>[] {
  const params = [...batch.params];
  const tags = [...batch.tags];
  const metrics = [...batch.metrics];
  const chunks: Required<Batch>[] = [];
  while (params.length > 0 || tags.length > 0 || metrics.length > 0) {
    const chunk: Required<Batch> = { params: params.splice(0, BATCH_LIMITS.params), tags: [], metrics: [] };
    chunk.tags = tags.splice(0, Math.min(BATCH_LIMITS.tags, BATCH_LIMITS.total - chunk.params.length));
    chunk.metrics = metrics.splice(
      0,
      Math.min(BATCH_LIMITS.metrics, BATCH_LIMITS.total - chunk.params.length - chunk.tags.length),
    );
    chunks.push(chunk);
  }
  return chunks;
}

/** The run's page in the MLflow UI; a link carries no user info (the browser asks for the password itself). */
export const runUrl = (uri: string, experimentId: string, runId: string) =>
  `${uiUrl(uri)}/#/experiments/${experimentId}/runs/${runId}`;

/** The MLflow UI at `uri`, as a link: without user info or a trailing slash. */
export const uiUrl = (uri: string) => withoutUserinfo(uri).replace(/\/+$/, '');

export function toKeyValues(record: Record<string, string>): KeyValue[] {
  return Object.entries(record).map(([key, value]) => ({ key, value }));
}

export function fromKeyValues(list: KeyValue[] | undefined): Record<string, string> {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, value]));
}
