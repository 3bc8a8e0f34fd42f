// A graph xp writes itself (protobuf.ts), run as a TensorFlow session through tfjs-node's backend. TensorFlow's
// C API loads SavedModels from a folder only, so the graph goes to a temporary folder, is loaded, and the folder
// is deleted: the session holds the graph in memory. Loading is synchronous, so an optimizer can open a session
// inside applyGradients; feeding and fetching share the tensors' buffers.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs-node';
import { DT_FLOAT, encodeSavedModel, type NodeDef, type TensorSpec } from './protobuf.ts';
import { nodeBackend } from './tfjs-internals.ts';

// The graph version: TensorFlow 2.9 and later read it.
const GRAPH_PRODUCER = 1087;

export interface Session {
  /** The signature's outputs for its inputs (float32, in the signature's order), as new tensors. */
  run(inputs: tf.Tensor[]): tf.Tensor[];
  close(): void;
}

/** Opens `nodes` as a session with one signature; throws when TensorFlow rejects the graph or the backend is not tfjs-node's. */
export function openSession(
  nodes: NodeDef[],
  inputs: Record<string, TensorSpec>,
  outputs: Record<string, TensorSpec>,
): Session {
  const backend = nodeBackend();
  if (!backend) throw new Error(`TensorFlow sessions need tfjs-node's backend`);
  const bytes = encodeSavedModel(nodes, { name: 'serving_default', inputs, outputs }, GRAPH_PRODUCER);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-graph-'));
  let id: number;
  try {
    fs.writeFileSync(path.join(dir, 'saved_model.pb'), bytes);
    id = backend.loadSavedModelMetaGraph(dir, 'serve');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const infos = Object.values(inputs).map((spec) => ({
    name: spec.name,
    tfDtype: spec.dtype === DT_FLOAT ? 'DT_FLOAT' : 'DT_INT32',
  }));
  const fetches = Object.values(outputs).map((spec) => spec.name);
  return {
    run: (tensors) => backend.runSavedModel(id, tensors, infos, fetches),
    close: () => backend.deleteSavedModel(id),
  };
}
