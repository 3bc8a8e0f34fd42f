// Shared by the tracking tests: a real MLflow server on a temporary store, and synthetic runs (no training).
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { Experiment } from '../../src/config/types.ts';
import { NOTEBOOK_AUGMENTATION } from '../../src/data/augment.ts';
import type { EpochLogs, RunStartInfo } from '../../src/events.ts';
import { startServer, type TrackingServer } from '../../src/tracking/server.ts';

// Fail fast instead of MLflow's minutes of retries when a test takes the server away on purpose.
process.env.MLFLOW_HTTP_REQUEST_MAX_RETRIES = '1';
process.env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = '0';
process.env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER = '0';
process.env.MLFLOW_HTTP_REQUEST_TIMEOUT = '20';
delete process.env.MLFLOW_EXPERIMENT_NAME;
delete process.env.MLFLOW_TRACKING_URI;

export const SERVER_TIMEOUT = 120_000;

const tempDirs: string[] = [];

export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `xp-tracking-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** For afterAll: the temporary stores and run folders of this test file go away. */
export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

export async function startTestServer(storeDir = tempDir('mlflow')): Promise<TrackingServer & { storeDir: string }> {
  const server = await startServer({ storeDir, timeoutMs: SERVER_TIMEOUT });
  return { ...server, storeDir };
}

/**
 * One real MLflow server for the test file, started before its tests and stopped after them with its temporary
 * folders; the returned function gives it.
 */
export function serverForFile(): () => TrackingServer & { storeDir: string } {
  let server: (TrackingServer & { storeDir: string }) | undefined;
  beforeAll(async () => {
    server = await startTestServer();
  }, SERVER_TIMEOUT);
  afterAll(async () => {
    await server?.stop();
    removeTempDirs();
  }, 60_000);
  return () => {
    if (!server) throw new Error('the test server is not started');
    return server;
  };
}

export function experiment(
  overrides: { dropout?: number; learning_rate?: number; description?: string } = {},
): Experiment {
  return {
    name: 'cats-vs-dogs',
    description: overrides.description ?? 'InceptionV3 cut at mixed7, small head',
    data: {
      train: '/data/train',
      validation: '/data/validation',
      image_size: [150, 150],
      batch_size: 20,
      class_mode: 'binary',
      interpolation: 'bilinear',
    },
    backbone: {
      name: 'inception_v3',
      weights: 'imagenet',
      cut_layer: 'mixed7',
      trainable: false,
      preprocessing: 'auto',
    },
    head: { pooling: 'flatten', units: [1024], activation: 'relu', dropout: overrides.dropout ?? 0.2 },
    augmentation: { ...NOTEBOOK_AUGMENTATION },
    optimizer: { name: 'rmsprop', learning_rate: overrides.learning_rate ?? 1e-4 },
    training: { epochs: 4, seed: 42, checkpoint: { monitor: 'val_loss', save_best_only: true } },
    sweep: { method: 'grid', metric: 'val_accuracy', goal: 'maximize', parameters: { 'head.dropout': [0.2, 0.5] } },
    tracking: { enabled: true, experiment_name: 'cats-vs-dogs' },
  };
}

export function startInfo(
  runDir: string,
  options: { runName?: string; configHash?: string; dropout?: number; parentRunId?: string } = {},
): RunStartInfo {
  return {
    runId: path.basename(runDir),
    runDir,
    runName: options.runName ?? 'test run',
    experiment: experiment({ dropout: options.dropout }),
    sourceFile: path.resolve('experiments/cats-vs-dogs.yaml'),
    configHash: options.configHash ?? 'abcdef0123456789',
    parentRunId: options.parentRunId,
    accel: 'native',
    facts: {
      total_params: 47_512_353,
      trainable_params: 38_537_217,
      train_images: 2000,
      validation_images: 1000,
      class_names: ['cats', 'dogs'],
    },
    datasets: [
      { name: 'train', digest: 'a'.repeat(64), source: '/data/train', context: 'train' },
      { name: 'validation', digest: 'b'.repeat(64), source: '/data/validation', context: 'eval' },
    ],
  };
}

/** Synthetic epoch logs: loss falls, accuracy rises with the epoch. */
export function epochLogs(epoch: number): EpochLogs {
  return {
    loss: 1 / (epoch + 1),
    accuracy: 0.5 + epoch / 20,
    val_loss: 1.2 / (epoch + 1),
    val_accuracy: 0.45 + epoch / 20,
    learning_rate: 1e-4,
    epoch_seconds: 30 + epoch,
    images_per_second: 66.6,
  };
}

/** A run folder with a few small files as artifacts: experiment.yaml, history.csv, model/{model.json,weights.bin}. */
export function runDirWithFiles(prefix = 'run'): { runDir: string; weights: Buffer } {
  const runDir = tempDir(prefix);
  const weights = Buffer.from(Array.from({ length: 4096 }, (_, index) => (index * 7) % 256));
  fs.writeFileSync(path.join(runDir, 'experiment.yaml'), 'name: cats-vs-dogs\n');
  fs.writeFileSync(path.join(runDir, 'history.csv'), 'epoch,loss\n1,0.5\n');
  fs.mkdirSync(path.join(runDir, 'model'));
  fs.writeFileSync(path.join(runDir, 'model', 'model.json'), '{"format":"layers-model"}');
  fs.writeFileSync(path.join(runDir, 'model', 'weights.bin'), weights);
  return { runDir, weights };
}

export function quietLog(): { log: (line: string) => void; lines: string[] } {
  const lines: string[] = [];
  return { log: (line) => lines.push(line), lines };
}

export interface AuthProxy {
  /** http://127.0.0.1:<port>, without user info. */
  url: string;
  port: number;
  /** Requests let through (with the right Basic credentials) and refused (401). */
  passed: number;
  refused: number;
  close(): Promise<void>;
}

/** MLflow behind basic auth, as a reverse proxy puts it: `Authorization: Basic user:password` or 401. */
export async function startBasicAuthProxy(upstream: string, user: string, password: string): Promise<AuthProxy> {
  const target = new URL(upstream);
  const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const server = http.createServer((request, response) => {
    if (request.headers.authorization !== expected) {
      proxy.refused++;
      request.resume();
      response.writeHead(401, { 'www-authenticate': 'Basic realm="mlflow"' }).end('Unauthorized');
      return;
    }
    proxy.passed++;
    const { authorization: _, ...headers } = request.headers;
    const forward = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: { ...headers, host: target.host },
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forward.on('error', () => response.destroy());
    request.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const proxy: AuthProxy = {
    url: `http://127.0.0.1:${port}`,
    port,
    passed: 0,
    refused: 0,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return proxy;
}
