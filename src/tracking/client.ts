// A small typed client of the MLflow REST API (tracking + artifacts proxy), retrying like the Python client.
import fs from 'node:fs';
import {
  chunkBatch,
  MlflowError,
  toKeyValues,
  type Batch,
  type ClientOptions,
  type DatasetInput,
  type Experiment,
  type FileInfo,
  type Metric,
  type Run,
  type RunInfo,
  type RunStatus,
  type SearchRunsOptions,
} from './mlflow-types.ts';

export * from './mlflow-types.ts';
import { errorOf, isStaleSocket, reason, RETRY_STATUSES, sleep } from './http.ts';
import { identityFromEnv, mlflowAuthorization } from './auth.ts';
import { requestUrl } from '../util/credentials.ts';

/** MLflow's client settings from the environment: who xp is (auth.ts) and MLFLOW_HTTP_REQUEST_*. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): ClientOptions {
  const number = (name: string) => (env[name] !== undefined && env[name] !== '' ? Number(env[name]) : undefined);
  const timeout = number('MLFLOW_HTTP_REQUEST_TIMEOUT');
  return {
    ...identityFromEnv(env),
    maxRetries: number('MLFLOW_HTTP_REQUEST_MAX_RETRIES'),
    backoffFactor: number('MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR'),
    backoffJitter: number('MLFLOW_HTTP_REQUEST_BACKOFF_JITTER'),
    timeoutMs: timeout === undefined ? undefined : timeout * 1000,
  };
}

export type MlflowClient = ReturnType<typeof createClient>;

/**
 * `baseUrl` as shown (a password in it masked, or known from where it was given): requests go to it without user
 * info, with the Authorization MLflow's own client would send (auth.ts).
 */
export function createClient(baseUrl: string, options: ClientOptions = credentialsFromEnv()) {
  const base = requestUrl(baseUrl).replace(/\/+$/, '');
  const maxRetries = options.maxRetries ?? 7;
  const backoffFactor = options.backoffFactor ?? 2;
  const backoffJitter = options.backoffJitter ?? 1;
  const timeoutMs = options.timeoutMs ?? 120_000;
  const warn = options.warn ?? ((message: string) => process.emitWarning(message, 'MlflowWarning'));
  const auth = mlflowAuthorization(baseUrl, options);

  async function send(
    method: string,
    path: string,
    init: {
      body?: BodyInit;
      json?: unknown;
      query?: Record<string, string | number | undefined>;
      timeoutMs?: number;
    } = {},
  ): Promise<Response> {
    const url = new URL(`${base}${path}`);
    for (const [key, value] of Object.entries(init.query ?? {}))
      if (value !== undefined) url.searchParams.set(key, String(value));
    const headers: Record<string, string> = {};
    if (auth) headers.authorization = auth;
    let body = init.body;
    if (init.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    let staleSocketRetried = false;
    for (let attempt = 0; ; attempt++) {
      let failure: MlflowError;
      let retryAfter = 0;
      try {
        const attemptMs = Math.min(init.timeoutMs ?? timeoutMs, remaining());
        if (attemptMs <= 0 || options.signal?.aborted) throw new DOMException('no time left', 'TimeoutError');
        const signals = [AbortSignal.timeout(attemptMs), ...(options.signal ? [options.signal] : [])];
        const response = await fetch(url, { method, headers, body, signal: AbortSignal.any(signals) });
        if (response.ok) return response;
        failure = await errorOf(response, method, url);
        retryAfter = Number(response.headers.get('retry-after')) || 0;
        if (!RETRY_STATUSES.has(response.status)) throw failure;
      } catch (error) {
        if (error instanceof MlflowError) throw error;
        failure = new MlflowError(`Cannot reach MLflow at ${base} (${method} ${url.pathname}): ${reason(error)}.`, {
          errorCode: 'UNREACHABLE',
          cause: error,
          hint: 'check that the tracking server runs and MLFLOW_TRACKING_URI / tracking.uri point to it',
        });
      }
      // A pooled keep-alive socket the server closed while idle fails at once: one immediate retry on a fresh one.
      if (!staleSocketRetried && isStaleSocket(failure.cause)) {
        staleSocketRetried = true;
        attempt--;
        continue;
      }
      if (attempt >= maxRetries || options.signal?.aborted) throw failure;
      // urllib3's Retry: no wait before the first retry, then factor * 2^(n-1) plus jitter, at most 120 s.
      const backoff = attempt === 0 ? 0 : Math.min(120, backoffFactor * 2 ** attempt + Math.random() * backoffJitter);
      const wait = Math.max(backoff, retryAfter) * 1000;
      // A retry that could not start before the deadline is not waited for.
      if (wait >= remaining()) throw failure;
      await sleep(wait, options.signal);
    }
  }

  const remaining = () => (options.deadline ? options.deadline() - Date.now() : Infinity);

  async function call<T>(method: 'GET' | 'POST', endpoint: string, payload?: Record<string, unknown>): Promise<T> {
    const path = `/api/2.0/mlflow/${endpoint}`;
    const response =
      method === 'GET'
        ? await send('GET', path, { query: payload as Record<string, string | number | undefined> })
        : await send('POST', path, { json: payload ?? {} });
    const text = await response.text();
    return (text ? JSON.parse(text) : {}) as T;
  }

  async function getExperimentByName(name: string): Promise<Experiment | undefined> {
    try {
      return (await call<{ experiment: Experiment }>('GET', 'experiments/get-by-name', { experiment_name: name }))
        .experiment;
    } catch (error) {
      if (error instanceof MlflowError && error.errorCode === 'RESOURCE_DOES_NOT_EXIST') return undefined;
      throw error;
    }
  }

  async function getExperiment(experimentId: string): Promise<Experiment> {
    return (await call<{ experiment: Experiment }>('GET', 'experiments/get', { experiment_id: experimentId }))
      .experiment;
  }

  async function createExperiment(name: string, tags: Record<string, string> = {}): Promise<string> {
    const answer = await call<{ experiment_id: string }>('POST', 'experiments/create', {
      name,
      tags: toKeyValues(tags),
    });
    return answer.experiment_id;
  }

  async function setExperimentTag(experimentId: string, key: string, value: string): Promise<void> {
    await call('POST', 'experiments/set-experiment-tag', { experiment_id: experimentId, key, value });
  }

  /** The experiment of that name, created when missing (a concurrent create wins the race harmlessly). */
  async function getOrCreateExperiment(name: string): Promise<Experiment> {
    let experiment = await getExperimentByName(name);
    if (!experiment) {
      try {
        // The experiment's kind, as MLflow's experiment-type selector sets it; which side of the UI a page opens on
        // comes from the link (links.ts).
        await createExperiment(name, { 'mlflow.experimentKind': 'custom_model_development' });
      } catch (error) {
        if (!(error instanceof MlflowError && error.errorCode === 'RESOURCE_ALREADY_EXISTS')) throw error;
      }
      experiment = await getExperimentByName(name);
    }
    if (!experiment)
      throw new MlflowError(`MLflow created experiment "${name}" but cannot find it.`, {
        errorCode: 'RESOURCE_DOES_NOT_EXIST',
      });
    if (experiment.lifecycle_stage === 'deleted') {
      throw new MlflowError(`Experiment "${name}" is deleted in MLflow: runs cannot be logged to it.`, {
        errorCode: 'INVALID_STATE',
        hint: 'restore it in the MLflow UI, or choose another tracking.experiment_name',
      });
    }
    return experiment;
  }

  async function searchExperiments(): Promise<Experiment[]> {
    const experiments: Experiment[] = [];
    let pageToken: string | undefined;
    do {
      const page = await call<{ experiments?: Experiment[]; next_page_token?: string }>('POST', 'experiments/search', {
        max_results: 1000,
        view_type: 'ACTIVE_ONLY',
        page_token: pageToken,
      });
      experiments.push(...(page.experiments ?? []));
      pageToken = page.next_page_token;
    } while (pageToken);
    return experiments;
  }

  async function createRun(run: {
    experimentId: string;
    runName?: string;
    startTime?: number;
    tags?: Record<string, string>;
  }): Promise<Run> {
    const answer = await call<{ run: Run }>('POST', 'runs/create', {
      experiment_id: run.experimentId,
      run_name: run.runName,
      start_time: run.startTime ?? Date.now(),
      tags: toKeyValues(run.tags ?? {}),
    });
    return answer.run;
  }

  async function updateRun(
    runId: string,
    update: { status?: RunStatus; endTime?: number; runName?: string },
  ): Promise<RunInfo> {
    const answer = await call<{ run_info: RunInfo }>('POST', 'runs/update', {
      run_id: runId,
      status: update.status,
      end_time: update.endTime,
      run_name: update.runName,
    });
    return answer.run_info;
  }

  async function deleteTag(runId: string, key: string): Promise<void> {
    await call('POST', 'runs/delete-tag', { run_id: runId, key });
  }

  async function getRun(runId: string): Promise<Run> {
    return (await call<{ run: Run }>('GET', 'runs/get', { run_id: runId })).run;
  }

  async function searchRuns(search: SearchRunsOptions): Promise<Run[]> {
    const limit = search.maxResults ?? Infinity;
    const runs: Run[] = [];
    let pageToken: string | undefined;
    do {
      const page = await call<{ runs?: Run[]; next_page_token?: string }>('POST', 'runs/search', {
        experiment_ids: search.experimentIds,
        filter: search.filter,
        order_by: search.orderBy,
        run_view_type: search.viewType ?? 'ACTIVE_ONLY',
        max_results: Math.min(1000, limit - runs.length),
        page_token: pageToken,
      });
      runs.push(...(page.runs ?? []));
      pageToken = page.next_page_token;
    } while (pageToken && runs.length < limit);
    return runs;
  }

  /** log-batch in as many requests as MLflow's limits need; NaN and Inf metric values are dropped (with a warning). */
  async function logBatch(runId: string, batch: Batch): Promise<{ requests: number; dropped: number }> {
    const finite = (batch.metrics ?? []).filter((metric) => Number.isFinite(metric.value));
    const dropped = (batch.metrics ?? []).length - finite.length;
    if (dropped > 0) {
      const keys = [
        ...new Set(
          (batch.metrics ?? []).filter((metric) => !Number.isFinite(metric.value)).map((metric) => metric.key),
        ),
      ];
      warn(`MLflow cannot chart NaN or Inf: ${dropped} metric value(s) not logged (${keys.join(', ')}).`);
    }
    const chunks = chunkBatch({ metrics: finite, params: batch.params ?? [], tags: batch.tags ?? [] });
    for (const chunk of chunks) await call('POST', 'runs/log-batch', { run_id: runId, ...chunk });
    return { requests: chunks.length, dropped };
  }

  async function logInputs(runId: string, datasets: DatasetInput[]): Promise<void> {
    await call('POST', 'runs/log-inputs', { run_id: runId, datasets });
  }

  async function getMetricHistory(runId: string, metricKey: string): Promise<Metric[]> {
    const metrics: Metric[] = [];
    let pageToken: string | undefined;
    do {
      const page = await call<{ metrics?: Metric[]; next_page_token?: string }>('GET', 'metrics/get-history', {
        run_id: runId,
        metric_key: metricKey,
        max_results: 25_000,
        page_token: pageToken,
      });
      metrics.push(...(page.metrics ?? []));
      pageToken = page.next_page_token;
    } while (pageToken);
    return metrics;
  }

  const artifactsPath = (artifactUri: string, relative = '') =>
    `/api/2.0/mlflow-artifacts/artifacts/${encodePath(joinPath(proxiedPath(artifactUri), relative))}`;

  /** Upload a local file (streamed) or bytes to `<artifact_uri>/<relativePath>`. */
  async function uploadArtifact(
    artifactUri: string,
    relativePath: string,
    content: string | Uint8Array | { file: string },
  ): Promise<void> {
    let body: BodyInit;
    let size: number;
    if (typeof content === 'object' && 'file' in content) {
      body = await fs.openAsBlob(content.file);
      size = (body as Blob).size;
    } else {
      body = typeof content === 'string' ? content : new Blob([new Uint8Array(content)]);
      size = typeof content === 'string' ? Buffer.byteLength(content) : content.byteLength;
    }
    // The timeout bounds a stalled request, not a large upload: allow 1 s per MB on top.
    const response = await send('PUT', artifactsPath(artifactUri, relativePath), {
      body,
      timeoutMs: Math.ceil(timeoutMs + size / 1000),
    }).catch((error: unknown) => {
      // MLflow answers a file it cannot store (its artifact store full: OSError 28 in its log) with a bare 500.
      if (!(error instanceof MlflowError) || (error.status ?? 0) < 500) throw error;
      throw new MlflowError(
        `${error.message} (the server could not store ${relativePath}, ${(size / 1e6).toFixed(1)} MB: is its artifact store full or not writable? its log says why)`,
        { errorCode: error.errorCode, status: error.status, cause: error, hint: error.hint },
      );
    });
    await response.body?.cancel();
  }

  async function listArtifacts(artifactUri: string, directory = ''): Promise<FileInfo[]> {
    const response = await send('GET', '/api/2.0/mlflow-artifacts/artifacts', {
      query: { path: joinPath(proxiedPath(artifactUri), directory) },
    });
    const answer = (await response.json()) as { files?: FileInfo[] };
    // The proxy answers paths relative to the listed folder; make them relative to the run's root.
    return (answer.files ?? []).map((file) => ({ ...file, path: joinPath(directory, file.path) }));
  }

  async function downloadArtifact(artifactUri: string, relativePath: string): Promise<Buffer> {
    const response = await send('GET', artifactsPath(artifactUri, relativePath));
    return Buffer.from(await response.arrayBuffer());
  }

  return {
    baseUrl: base,
    getExperimentByName,
    getExperiment,
    createExperiment,
    getOrCreateExperiment,
    setExperimentTag,
    searchExperiments,
    createRun,
    updateRun,
    deleteTag,
    getRun,
    searchRuns,
    logBatch,
    logInputs,
    getMetricHistory,
    uploadArtifact,
    listArtifacts,
    downloadArtifact,
  };
}

/** `mlflow-artifacts:/1/<run>/artifacts` (or with a host) -> `1/<run>/artifacts`. */
function proxiedPath(artifactUri: string): string {
  const match = /^mlflow-artifacts:(?:\/\/[^/]*)?\/?(.*)$/.exec(artifactUri);
  if (!match) {
    throw new MlflowError(
      `The run stores artifacts at ${artifactUri}, which xp cannot reach: it uploads through the tracking server only.`,
      {
        errorCode: 'UNSUPPORTED_ARTIFACT_URI',
        hint: 'serve artifacts with `mlflow server --serve-artifacts` and log to an experiment created since (its artifact location starts with mlflow-artifacts:/)',
      },
    );
  }
  return match[1].replace(/\/+$/, '');
}

const joinPath = (...parts: string[]) =>
  parts
    .filter(Boolean)
    .join('/')
    .replace(/\/{2,}/g, '/');
const encodePath = (value: string) => value.split('/').map(encodeURIComponent).join('/');
