// tfjs-node ships no 'Transform' kernel, so `tf.image.transform` would throw on the 'tensorflow' backend.
// Register one that runs TensorFlow's own ImageProjectiveTransformV3 op, warping a whole batch natively. It is
// part of every policy: plain tfjs has no other way to run the augmentation on this backend.
import * as tf from '@tensorflow/tfjs-node';
import { nodeBackend, transformAttrs } from './tfjs-internals.ts';

const BACKEND = 'tensorflow';

export function registerNativeTransform(): void {
  if (tf.getKernel('Transform', BACKEND) !== undefined) return;
  tf.registerKernel({
    kernelName: 'Transform',
    backendName: BACKEND,
    kernelFunc: ({ inputs, attrs, backend }) => {
      const node = nodeBackend(backend);
      if (!node) throw new Error(`The ${BACKEND} backend is not tfjs-node's: xp's Transform kernel cannot run on it`);
      const image = inputs.image as tf.TensorInfo;
      const transforms = inputs.transforms as tf.TensorInfo;
      const { interpolation, fillMode, fillValue, outputShape } = transformAttrs(attrs);
      const [height, width] = outputShape ?? [image.shape[1], image.shape[2]];
      const { TF_ATTR_STRING, TF_ATTR_TYPE } = node.binding;
      const opAttrs = [
        { name: 'dtype', type: TF_ATTR_TYPE, value: node.getDTypeInteger(image.dtype) },
        { name: 'interpolation', type: TF_ATTR_STRING, value: interpolation.toUpperCase() },
        { name: 'fill_mode', type: TF_ATTR_STRING, value: fillMode.toUpperCase() },
      ];
      const shape = tf.tensor1d([height, width], 'int32');
      const fill = tf.scalar(fillValue, 'float32');
      try {
        return node.executeSingleOutput('ImageProjectiveTransformV3', opAttrs, [image, transforms, shape, fill]);
      } finally {
        shape.dispose();
        fill.dispose();
      }
    },
  });
}
