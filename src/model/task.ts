// The classification task, decided once from the number of classes: two classes are one sigmoid unit trained
// with binary cross-entropy on 0/1 labels and thresholded at 0.5; more are softmax units trained with categorical
// cross-entropy on one-hot labels and read by argmax (Keras' class_mode binary / categorical). Plain data: the
// head, the loss, label tensors, scoring and prediction all read it instead of testing the class count again.
export type Loss = 'binaryCrossentropy' | 'categoricalCrossentropy';

export interface Task {
  kind: 'binary' | 'categorical';
  numClasses: number;
  /** Units of the last Dense layer. */
  units: number;
  activation: 'sigmoid' | 'softmax';
  loss: Loss;
}

export function taskFor(numClasses: number): Task {
  return numClasses <= 2
    ? { kind: 'binary', numClasses, units: 1, activation: 'sigmoid', loss: 'binaryCrossentropy' }
    : { kind: 'categorical', numClasses, units: numClasses, activation: 'softmax', loss: 'categoricalCrossentropy' };
}

/** Predicted class of each row of a [n, units] probability array. */
export function predictedClasses(task: Task, probabilities: Float32Array | number[]): Int32Array {
  const rows = probabilities.length / task.units;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    if (task.kind === 'binary') out[r] = probabilities[r] > 0.5 ? 1 : 0;
    else {
      let best = 0;
      for (let c = 1; c < task.units; c++)
        if (probabilities[r * task.units + c] > probabilities[r * task.units + best]) best = c;
      out[r] = best;
    }
  }
  return out;
}
