// The project's performance figure: images/s of the frozen backbone forward pass, for the Keras
// reference (InceptionV3 to mixed7, 150x150, batch 20), three ways: the tfjs LayersModel as loaded,
// with BatchNormalization folded (eager tfjs ops), and compiled to a TensorFlow graph.
import * as tf from '@tensorflow/tfjs-node';
import { compileForInference, freezeForInference } from '../../src/accel/index.ts';
import type { BackboneConfig } from '../../src/config/types.ts';
import { loadBackbone } from '../../src/model/backbone.ts';

export interface BenchOptions {
  backbone?: BackboneConfig;
  size?: [number, number];
  batch?: number;
  /** Timed batches per variant, after one warm-up each. */
  iterations?: number;
}

export interface BenchResult {
  forward_images_per_s: number;
  folded_images_per_s: number;
  graph_images_per_s: number;
  batch: number;
  iterations: number;
}

const REFERENCE: BackboneConfig = {
  name: 'inception_v3',
  weights: 'nsfwjs',
  cut_layer: 'mixed7',
  trainable: false,
  preprocessing: 'auto',
};

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function benchBackbone(opts: BenchOptions = {}): Promise<BenchResult> {
  const { backbone = REFERENCE, size = [150, 150], batch = 20, iterations = 10 } = opts;
  const { model } = await loadBackbone(backbone, size);
  const folded = freezeForInference(model);
  const graph = await compileForInference(model);
  const x = tf.randomUniform([batch, ...size, 3], 0, 1, 'float32', 42) as tf.Tensor4D;
  const variants: [keyof BenchResult, (x: tf.Tensor4D) => tf.Tensor][] = [
    ['forward_images_per_s', (t) => model.predict(t) as tf.Tensor],
    ['folded_images_per_s', folded],
    ['graph_images_per_s', graph],
  ];
  const seconds = new Map<string, number[]>();
  try {
    for (const [, run] of variants) run(x).dispose(); // warm-up: kernel selection, graph optimization
    // Interleaved rounds, so a busy neighbour process slows all variants alike; medians resist spikes.
    for (let i = 0; i < iterations; i++) {
      for (const [key, run] of variants) {
        const start = performance.now();
        const y = run(x);
        await y.data(); // the output on the host, as a training step needs it
        seconds.set(key, [...(seconds.get(key) ?? []), (performance.now() - start) / 1000]);
        y.dispose();
      }
    }
  } finally {
    x.dispose();
    folded.dispose();
    graph.dispose();
    model.dispose();
  }
  const rate = (key: string) => Math.round((batch / median(seconds.get(key) ?? [])) * 10) / 10;
  return {
    forward_images_per_s: rate('forward_images_per_s'),
    folded_images_per_s: rate('folded_images_per_s'),
    graph_images_per_s: rate('graph_images_per_s'),
    batch,
    iterations,
  };
}
