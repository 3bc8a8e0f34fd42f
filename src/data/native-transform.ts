// tfjs-node 4.22 ships no 'Transform' kernel, so `tf.image.transform` would throw on the 'tensorflow' backend.
// Register one that runs TensorFlow's own ImageProjectiveTransformV3 op, warping a whole batch natively.
import * as tf from '@tensorflow/tfjs-node';

interface TransformAttrs {
  interpolation: 'nearest' | 'bilinear';
  fillMode: 'constant' | 'reflect' | 'wrap' | 'nearest';
  fillValue: number;
  outputShape?: [number, number];
}

// The parts of tfjs-node's NodeJSKernelBackend used here (not exported by the package).
interface NodeBackend {
  binding: { TF_ATTR_STRING: number; TF_ATTR_TYPE: number };
  getDTypeInteger(dtype: tf.DataType): number;
  executeSingleOutput(name: string, attrs: unknown[], inputs: tf.TensorInfo[]): tf.Tensor;
}

const BACKEND = 'tensorflow';

export function registerNativeTransform(): void {
  if (tf.getKernel('Transform', BACKEND) !== undefined) return;
  tf.registerKernel({
    kernelName: 'Transform',
    backendName: BACKEND,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const nodeBackend = backend as unknown as NodeBackend;
      const image = inputs.image as tf.TensorInfo;
      const transforms = inputs.transforms as tf.TensorInfo;
      const { interpolation, fillMode, fillValue, outputShape } = attrs as unknown as TransformAttrs;
      const [height, width] = outputShape ?? [image.shape[1], image.shape[2]];
      const { TF_ATTR_STRING, TF_ATTR_TYPE } = nodeBackend.binding;
      const opAttrs = [
        { name: 'dtype', type: TF_ATTR_TYPE, value: nodeBackend.getDTypeInteger(image.dtype) },
        { name: 'interpolation', type: TF_ATTR_STRING, value: interpolation.toUpperCase() },
        { name: 'fill_mode', type: TF_ATTR_STRING, value: fillMode.toUpperCase() },
      ];
      const shape = tf.tensor1d([height, width], 'int32');
      const fill = tf.scalar(fillValue, 'float32');
      try {
        return nodeBackend.executeSingleOutput('ImageProjectiveTransformV3', opAttrs, [image, transforms, shape, fill]);
      } finally {
        shape.dispose();
        fill.dispose();
      }
    },
  });
}
