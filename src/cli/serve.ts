// `xp serve`: parses, opens the run's model, starts the server, prints where it listens; SIGTERM or Ctrl-C answers
// the requests in flight and exits 0.
import { createRequire } from 'node:module';
import { XpError } from '../errors.ts';

export interface ServeCommandOptions {
  host: string;
  port: number;
  maxBatch: number;
  batchWaitMs: number;
  maxBodyMb: number;
  maxImages: number;
  readTimeoutMs: number;
}

export async function serveCommand(target: string, opts: ServeCommandOptions): Promise<number> {
  const runDir = await servedRunDir(target);
  const { openSavedRun } = await import('../model/predictor.ts');
  const run = await openSavedRun(runDir);
  const tf = await import('@tensorflow/tfjs-node');
  const { startServer } = await import('../serve/server.ts');
  const server = await startServer(run, {
    host: opts.host,
    port: opts.port,
    maxBatch: opts.maxBatch,
    batchWaitMs: opts.batchWaitMs,
    maxBodyBytes: opts.maxBodyMb * 2 ** 20,
    maxImages: opts.maxImages,
    readTimeoutMs: opts.readTimeoutMs,
    maxPixels: MAX_PIXELS,
    version: createRequire(import.meta.url)('../../package.json').version,
    tensors: () => tf.memory().numTensors,
  }).catch((error: NodeJS.ErrnoException) => {
    throw new XpError(`cannot listen on ${opts.host}:${opts.port}: ${error.message}`, {
      hint: error.code === 'EADDRINUSE' ? 'give another --port, or --port 0 for a free one' : undefined,
      cause: error,
    });
  });
  console.log(`xp serve: ${runDir} (${run.classNames.join(', ')}; ${run.imageSize.join('x')})`);
  console.log(`  listening on ${server.url}: POST /invocations, GET /ping /health /version /metrics`);
  console.log(`  batches of up to ${opts.maxBatch} images within ${opts.batchWaitMs} ms; Ctrl-C or SIGTERM stops`);
  const signal = await new Promise<string>((resolve) => {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => resolve(s));
  });
  console.log(`xp serve: ${signal}: answering ${server.inFlight()} request(s) in flight, then stopping`);
  await server.close();
  console.log('xp serve: stopped');
  return 0;
}

// About 50 megapixels (an 8K photo is 33): a small PNG can declare a huge image, whose pixels would take the memory.
const MAX_PIXELS = 50_000_000;

/** The run folder of a run folder or of a registered model (models:/NAME/VERSION, models:/NAME@ALIAS). */
async function servedRunDir(target: string): Promise<string> {
  if (target.startsWith('models:/')) {
    const { runDirOfModel } = await import('../serve/model-uri.ts');
    return runDirOfModel(target);
  }
  const fs = await import('node:fs');
  if (!fs.statSync(target, { throwIfNoEntry: false })?.isDirectory())
    throw new XpError(`${target} is not a run folder`, {
      hint: 'give runs/<experiment>/<run-id>, or models:/NAME/VERSION or models:/NAME@ALIAS',
    });
  return target;
}
