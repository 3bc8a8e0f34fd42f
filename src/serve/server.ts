// `xp serve`'s HTTP server: MLflow's scoring routes over a saved run. Each request's images are decoded as `xp
// predict` decodes them, then predicted in batches with other requests'. A bad request is answered and forgotten;
// closing stops taking connections and waits for the requests in flight.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { decodeImages } from '../data/load.ts';
import type { SavedRun } from '../model/predictor.ts';
import { createBatcher } from './batcher.ts';
import { readBody } from './body.ts';
import { serveMetrics } from './metrics.ts';
import { BadRequest, errorBody, parseInvocation, predictionsBody } from './protocol.ts';

export interface ServeOptions {
  host: string;
  port: number;
  maxBatch: number;
  batchWaitMs: number;
  maxBodyBytes: number;
  maxImages: number;
  /** A client has this long to send a whole request; then it gets 408 and its connection is closed. */
  readTimeoutMs: number;
  /** Images with more pixels are refused (400) before decoding: a small file can hold a huge image. */
  maxPixels: number;
  version: string;
  /** tf.memory().numTensors, for the metric that shows leaks. */
  tensors(): number;
}

export interface Server {
  url: string;
  /** Requests being answered now. */
  inFlight(): number;
  /** Takes no new connection, answers the requests in flight, then resolves. */
  close(): Promise<void>;
}

export async function startServer(run: SavedRun, opts: ServeOptions): Promise<Server> {
  let closing = false;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const metrics = serveMetrics({ maxBatch: opts.maxBatch, tensors: opts.tensors, inFlight: () => inFlight });
  const [h, w] = run.imageSize;
  const imageBytes = h * w * 3;
  const batcher = createBatcher<Uint8Array, Float32Array>({
    maxBatch: opts.maxBatch,
    waitMs: opts.batchWaitMs,
    onBatch: (n) => metrics.batchSize.observe(n),
    async run(items) {
      const images = new Uint8Array(items.length * imageBytes);
      for (const [i, item] of items.entries()) images.set(item, i * imageBytes);
      return run.predict(images, items.length);
    },
  });

  const invocations = async (req: http.IncomingMessage): Promise<string> => {
    const body = await readBody(req, opts.maxBodyBytes);
    const buffers = parseInvocation(body, req.headers['content-type'], opts.maxImages);
    const { images, failures } = await decodeImages(buffers, {
      imageSize: run.imageSize,
      interpolation: run.interpolation,
      maxPixels: opts.maxPixels,
    });
    const failed = failures.findIndex((f) => f !== undefined);
    if (failed >= 0) throw new BadRequest(400, `image ${failed} does not decode: ${failures[failed]}`);
    const probabilities = await batcher.submit(
      buffers.map((_, i) => images.subarray(i * imageBytes, (i + 1) * imageBytes)),
    );
    metrics.images.inc(buffers.length);
    return predictionsBody(run.classNames, probabilities);
  };

  const answer = (res: http.ServerResponse, path: string, status: number, body: string, type: string) => {
    // A client gone (cut off by the timeout, which counts it, or went away) reads no answer: none is counted.
    if (res.destroyed) return;
    metrics.requests.inc({ path, status });
    if (status >= 400) metrics.errors.inc({ status });
    if (closing) res.setHeader('Connection', 'close');
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0];
    const route = `${req.method} ${path}`;
    // Paths not served share one label, so that a scan of random URLs cannot grow the metrics without bound.
    const known = ROUTES.includes(route) ? path : 'other';
    try {
      if (route === 'GET /ping' || route === 'GET /health') answer(res, known, 200, '\n', JSON_TYPE);
      else if (route === 'GET /version') answer(res, known, 200, opts.version, JSON_TYPE);
      else if (route === 'GET /metrics')
        answer(res, known, 200, await metrics.registry.metrics(), metrics.registry.contentType);
      else if (route === 'POST /invocations') answer(res, known, 200, await invocations(req), JSON_TYPE);
      else throw new BadRequest(404, `no route ${route}; xp serve answers ${ROUTES.join(', ')}`);
    } catch (error) {
      const status = error instanceof BadRequest ? error.status : 500;
      const message = error instanceof Error ? error.message : String(error);
      if (status >= 500) console.error(`xp serve: ${route}: ${message}`);
      // The rest of a refused body is read and dropped before the answer, so that the client, still sending, reads
      // it: a socket closed on unread data is reset, and the client sees a failed request instead of the status.
      if (!req.complete) {
        res.setHeader('Connection', 'close');
        await drain(req, DRAIN_FACTOR * opts.maxBodyBytes);
      }
      if (!res.headersSent) answer(res, known, status, errorBody(status, message), JSON_TYPE);
    } finally {
      metrics.latency.observe({ path: known }, (performance.now() - started) / 1000);
    }
  };

  const server = http.createServer(
    {
      requestTimeout: opts.readTimeoutMs,
      headersTimeout: opts.readTimeoutMs,
      // Node checks its timeouts every 30 s by default, which would let a slow client hold a connection that long.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, opts.readTimeoutMs / 2)),
    },
    (req, res) => {
      inFlight++;
      res.on('close', () => {
        if (--inFlight === 0 && closing) drained?.();
      });
      void handle(req, res);
    },
  );
  // A request cut off by the timeout, or that does not parse as HTTP, is answered by its status and the connection
  // closed; the server goes on.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const status = error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    metrics.errors.inc({ status });
    if (socket.writable && error.code !== 'ECONNRESET') {
      const body = errorBody(status, `${http.STATUS_CODES[status]}: ${error.message}`);
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    socket.destroySoon();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    inFlight: () => inFlight,
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        const done = () => {
          // Every request is answered: what remains are idle keep-alive connections.
          server.closeAllConnections();
          resolve();
        };
        server.close();
        server.closeIdleConnections();
        if (inFlight === 0) done();
        else drained = done;
      }),
  };
}

const JSON_TYPE = 'application/json';
const ROUTES = ['GET /ping', 'GET /health', 'GET /version', 'GET /metrics', 'POST /invocations'];

/** How much of a refused body is read before answering, in limits: past it, the answer goes and the socket closes. */
const DRAIN_FACTOR = 4;

/** Reads and drops the rest of a request's body, up to `most` bytes; resolves when it ended, passed that, or closed. */
function drain(req: http.IncomingMessage, most: number): Promise<void> {
  return new Promise((resolve) => {
    let read = 0;
    const done = () => {
      req.off('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      read += chunk.length;
      if (read > most) done();
    };
    req.on('data', onData);
    req.once('end', done);
    req.once('close', done);
    req.once('error', done);
    req.resume();
  });
}
