// A text table of a model's layers, like Keras' model.summary().
import type * as tf from '@tensorflow/tfjs-node';

const format = (n: number) => n.toLocaleString('en-US');

function shapeText(shape: unknown): string {
  if (!Array.isArray(shape)) return String(shape);
  if (Array.isArray(shape[0])) return shape.map(shapeText).join(', ');
  return `(${shape.map((d) => (d == null ? 'None' : d)).join(', ')})`;
}

function outputShape(layer: tf.layers.Layer): string {
  try {
    return shapeText(layer.outputShape);
  } catch {
    return 'multiple';
  }
}

const countOf = (weights: tf.LayerVariable[]) =>
  weights.reduce((sum, w) => sum + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);

/** Layer name (type), output shape and parameter count per layer, then total/trainable/non-trainable. */
export function layerSummary(model: tf.LayersModel): string {
  const rows = model.layers.map((layer) => [
    `${layer.name} (${layer.getClassName()})`,
    outputShape(layer),
    format(layer.countParams()),
  ]);
  const header = ['Layer (type)', 'Output Shape', 'Param #'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)) + 2);
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 2 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('')
      .trimEnd();
  const ruleWidth = widths.reduce((a, b) => a + b, 0);
  const trainable = countOf(model.trainableWeights);
  const nonTrainable = countOf(model.nonTrainableWeights);
  return [
    `Model: "${model.name}"`,
    '_'.repeat(ruleWidth),
    line(header),
    '='.repeat(ruleWidth),
    ...rows.map(line),
    '='.repeat(ruleWidth),
    `Total params: ${format(trainable + nonTrainable)}`,
    `Trainable params: ${format(trainable)}`,
    `Non-trainable params: ${format(nonTrainable)}`,
    '_'.repeat(ruleWidth),
  ].join('\n');
}
