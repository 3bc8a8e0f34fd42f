// What `xp serve` tells Prometheus at GET /metrics, through prom-client: requests and errors by status, latency,
// batch sizes, images predicted, requests in flight, and the tensors alive (flat across requests unless something leaks).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface ServeMetrics {
  registry: Registry;
  requests: Counter<'path' | 'status'>;
  errors: Counter<'status'>;
  latency: Histogram<'path'>;
  batchSize: Histogram;
  images: Counter;
}

export function serveMetrics(opts: { maxBatch: number; tensors: () => number; inFlight: () => number }): ServeMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'xp_serve_' });
  const registers = [registry];
  // Powers of two up to the largest batch, so that every batch size the flags allow has its bucket.
  const sizes: number[] = [];
  for (let b = 1; b < opts.maxBatch; b *= 2) sizes.push(b);
  sizes.push(opts.maxBatch);
  new Gauge({
    name: 'xp_serve_tensors',
    help: 'TensorFlow tensors alive in the server (tf.memory().numTensors)',
    registers,
    collect() {
      this.set(opts.tensors());
    },
  });
  new Gauge({
    name: 'xp_serve_requests_in_flight',
    help: 'requests received and not yet answered (this one included)',
    registers,
    collect() {
      this.set(opts.inFlight());
    },
  });
  return {
    registry,
    requests: new Counter({
      name: 'xp_serve_requests_total',
      help: 'HTTP requests answered, by path and status',
      labelNames: ['path', 'status'],
      registers,
    }),
    errors: new Counter({
      name: 'xp_serve_errors_total',
      help: 'requests answered with an error status (4xx, 5xx), by status; timeouts included',
      labelNames: ['status'],
      registers,
    }),
    latency: new Histogram({
      name: 'xp_serve_request_duration_seconds',
      help: 'time from a request to its answer, by path',
      labelNames: ['path'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    batchSize: new Histogram({
      name: 'xp_serve_batch_size',
      help: 'images per model call (concurrent requests are predicted together)',
      buckets: sizes,
      registers,
    }),
    images: new Counter({ name: 'xp_serve_images_total', help: 'images predicted', registers }),
  };
}
