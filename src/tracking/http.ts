// How a request to MLflow failed, in words a user can act on, and which failures are worth retrying (as MLflow's
// own Python client retries them).
import { MlflowError } from './mlflow-types.ts';

export const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

export async function errorOf(response: Response, method: string, url: URL): Promise<MlflowError> {
  const text = await response.text().catch(() => '');
  let errorCode = `HTTP_${response.status}`;
  let message = text.trim().slice(0, 500) || response.statusText;
  try {
    const json = JSON.parse(text) as { error_code?: string; message?: string };
    if (json.error_code) errorCode = json.error_code;
    if (json.message) message = json.message;
  } catch {
    // not JSON: keep the text
  }
  const hint =
    response.status === 401
      ? 'give the server user:password@ in the tracking URI, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)'
      : response.status === 403 && /host/i.test(message)
        ? 'MLflow 3 accepts only allowed Host headers: call it by 127.0.0.1/localhost or start it with --allowed-hosts'
        : undefined;
  return new MlflowError(`MLflow ${method} ${url.pathname} failed with ${errorCode}: ${message}`, {
    errorCode,
    status: response.status,
    hint,
  });
}

export function reason(error: unknown): string {
  if (error instanceof Error) {
    if (error.name === 'TimeoutError') return 'timed out';
    if (error.name === 'AbortError') return 'given up';
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ?? cause?.message ?? error.message;
  }
  return String(error);
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

export function isStaleSocket(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } })?.cause;
  return cause?.code === 'UND_ERR_SOCKET' || cause?.code === 'ECONNRESET';
}
