// Elementwise optimizer updates as XLA-compiled kernels. Every tfjs op is its own TensorFlow kernel making a
// full memory pass, which on a large head's kernel is what a step's time goes to: an update written as 8 ops
// makes 8 of them. The same expression written as a TensorFlow graph whose nodes carry
// `_XlaCompile` becomes one XLA cluster, which TensorFlow's CPU JIT (in libtensorflow, no flags needed) fuses
// into one loop per output, split over the cores (XLA:CPU has no multi-output fusion: RMSprop's s' and w'
// are two loops, Adam's m', v', w' three). The graph is a SavedModel run as one session call through
// tfjs-node's backend, synchronously, so an optimizer can use it inside applyGradients; feeding and fetching
// share the tensors' buffers (no copies). The placeholders have no shape: XLA compiles (and caches) one kernel
// per distinct input shape on first use.
import * as tf from '@tensorflow/tfjs-node';
import { accelPolicy } from './policy.ts';
import { DT_FLOAT, type Attr, type NodeDef } from './protobuf.ts';
import { openSession, type Session } from './saved-model.ts';

/** A graph value: an input, a constant or an op's output. */
export interface Expr {
  readonly node: string;
}

/**
 * The float32 elementwise ops an update is written with, generic so that one definition runs both as tfjs
 * ops (tfOps) and as the fused graph (compileFused): the fallback is the same math by construction.
 */
export interface Ops<X> {
  add(a: X | number, b: X | number): X;
  sub(a: X | number, b: X | number): X;
  mul(a: X | number, b: X | number): X;
  div(a: X | number, b: X | number): X;
  square(a: X): X;
  sqrt(a: X): X;
}

export const tfOps: Ops<tf.Tensor> = {
  add: tf.add,
  sub: tf.sub,
  mul: tf.mul,
  div: tf.div,
  square: tf.square,
  sqrt: tf.sqrt,
};

/**
 * Runs the compiled expression on float32 tensors of one shape (or scalars, which broadcast); the outputs are
 * new tensors in the current tf.tidy scope, or undefined when the fused path is unavailable.
 */
export interface FusedFn {
  (...inputs: tf.Tensor[]): tf.Tensor[] | undefined;
  dispose(): void;
}

const T: Attr = { type: DT_FLOAT };
const XLA: Record<string, Attr> = { _XlaCompile: { b: true }, _XlaScope: { s: 'fused_update' } };

/**
 * The variable size from which optimizers take the fused path: below it, the XLA compile per distinct shape
 * costs more than the steps of a run save (docs/performance.md has the figures).
 */
export const FUSED_MIN_SIZE = 1 << 18;

const debug = (message: string, error?: unknown) => {
  if (process.env.XP_DEBUG) console.error(`xp: fused update ${message}`, error ?? '');
};

function graphOf(
  arity: number,
  build: (ops: Ops<Expr>, ...inputs: Expr[]) => Expr[],
): { nodes: NodeDef[]; inputs: string[]; outputs: string[] } {
  const nodes: NodeDef[] = [];
  const add = (op: string, inputs: string[], attrs: Record<string, Attr> = { T }): Expr => {
    const name = `n${nodes.length}`;
    nodes.push({ name, op, inputs, attrs: { ...attrs, ...XLA } });
    return { node: name };
  };
  const constants = new Map<number, Expr>();
  const operand = (x: Expr | number): string => {
    if (typeof x !== 'number') return x.node;
    let c = constants.get(x);
    if (!c) {
      const content = new Uint8Array(new Float32Array([x]).buffer);
      c = add('Const', [], { dtype: T, value: { tensor: { dtype: DT_FLOAT, shape: [], content } } });
      constants.set(x, c);
    }
    return c.node;
  };
  const binary = (op: string) => (a: Expr | number, b: Expr | number) => add(op, [operand(a), operand(b)]);
  const ops: Ops<Expr> = {
    add: binary('AddV2'),
    sub: binary('Sub'),
    mul: binary('Mul'),
    div: binary('RealDiv'),
    square: (a) => add('Square', [a.node]),
    sqrt: (a) => add('Sqrt', [a.node]),
  };
  const inputs = Array.from({ length: arity }, (_, i) => `input${i}`);
  for (const name of inputs) nodes.push({ name, op: 'Placeholder', inputs: [], attrs: { dtype: T } }); // any shape
  const results = build(ops, ...inputs.map((node) => ({ node })));
  const outputs = results.map((r, i) => {
    nodes.push({ name: `output${i}`, op: 'Identity', inputs: [r.node], attrs: { T, ...XLA } });
    return `output${i}`;
  });
  return { nodes, inputs, outputs };
}

function open(arity: number, build: (ops: Ops<Expr>, ...inputs: Expr[]) => Expr[]): Session | undefined {
  const graph = graphOf(arity, build);
  const spec = (name: string) => [name, { name: `${name}:0`, dtype: DT_FLOAT, shape: [] }];
  try {
    return openSession(
      graph.nodes,
      Object.fromEntries(graph.inputs.map(spec)),
      Object.fromEntries(graph.outputs.map(spec)),
    );
  } catch (error) {
    debug('unavailable:', error);
    return undefined;
  }
}

/**
 * `build` (written with `ops` on `arity` input tensors) as one XLA cluster, compiled on the first call (XLA
 * compiles again, once, for each new input shape). The function returns undefined, for the caller to use tfjs
 * ops, when `enabled` is false (the acceleration policy has no fused updates), when TensorFlow rejects the
 * graph, and after dispose. XP_DEBUG=1 prints why.
 */
export function compileFused(
  arity: number,
  build: (ops: Ops<Expr>, ...inputs: Expr[]) => Expr[],
  enabled = accelPolicy().fusedUpdates,
): FusedFn {
  let state: Session | 'new' | 'off' = enabled ? 'new' : 'off';
  const dispose = () => {
    if (typeof state === 'object') state.close();
    state = 'off';
  };
  const fn = (...inputs: tf.Tensor[]) => {
    if (state === 'new') state = open(arity, build) ?? 'off';
    if (state === 'off') return undefined;
    try {
      return state.run(inputs);
    } catch (error) {
      debug('failed, falling back to tfjs ops:', error);
      dispose();
      return undefined;
    }
  };
  return Object.assign(fn, { dispose });
}
