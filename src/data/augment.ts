// Keras `ImageDataGenerator` augmentation on whole batches: per image, one random affine transform drawn like
// `get_random_transform` and composed like `apply_affine_transform` (rotation @ shift @ shear @ zoom about the
// image centre, an output->input map sampled bilinearly), with the flips folded into the same matrix, so the
// batch is warped by a single native ImageProjectiveTransformV3 call; then brightness.
//
// Axes: the matrix is built in (row, col) coordinates, so tx (from height_shift_range) moves rows and ty (from
// width_shift_range) moves columns, as documented by Keras. Keras code since keras-preprocessing 1.1.2 (2020,
// also keras/src/legacy in Keras 3) swaps the axes before calling scipy, so there height_shift_range moves
// columns, positive angles turn the other way and shear acts along the other axis (keras-team/keras#17398).
// Shift, rotation and zoom draws are symmetric, so for square images only the shear axis differs in distribution.
//
// Fill modes (Keras passes them to scipy.ndimage; here TensorFlow's op does the sampling):
// - nearest: same as scipy.
// - reflect: TF's reflect is (d c b a | a b c d | d c b a), exactly scipy's 'reflect' (not scipy's 'mirror').
// - constant: TF reads cval for out-of-range neighbours and interpolates toward it (scipy 'grid-constant');
//   scipy 'constant' returns cval only past the outer pixel centres, so results differ within the 1 px border band.
// - wrap: TF wraps with period n (scipy 'grid-wrap'); scipy's legacy 'wrap' overlaps first and last pixel (period n-1).
import * as tf from '@tensorflow/tfjs-node';
import type { AugmentationConfig } from '../config/types.ts';
import type { Rng } from '../util/random.ts';
import { registerNativeTransform } from '../accel/index.ts';

/** One image's transform, with the names and units of Keras' transform_parameters. */
export interface TransformParams {
  theta: number; // rotation, degrees
  tx: number; // shift along rows (height), pixels
  ty: number; // shift along columns (width), pixels
  shear: number; // degrees
  zx: number; // zoom along rows; > 1 shrinks the content (output->input scale)
  zy: number; // zoom along columns
  flip_horizontal: boolean;
  flip_vertical: boolean;
  brightness?: number; // multiplier, applied after the warp
}

/** The reference notebook's ImageDataGenerator settings (benchmarks and tests use them). */
export const NOTEBOOK_AUGMENTATION: Readonly<AugmentationConfig> = Object.freeze({
  rotation_range: 40,
  width_shift_range: 0.2,
  height_shift_range: 0.2,
  shear_range: 0.2,
  zoom_range: 0.2,
  horizontal_flip: true,
  vertical_flip: false,
  fill_mode: 'nearest',
  cval: 0,
});

export const IDENTITY_TRANSFORM: Readonly<TransformParams> = Object.freeze({
  theta: 0,
  tx: 0,
  ty: 0,
  shear: 0,
  zx: 1,
  zy: 1,
  flip_horizontal: false,
  flip_vertical: false,
});

export interface Augmenter {
  /** int32 or float32 pixels 0..255 in, a new float32 0..255 tensor out (the input is not disposed). */
  augment(batch: tf.Tensor4D): tf.Tensor4D;
  /** True when the config does nothing: augment only casts/copies. */
  identity: boolean;
}

type Size = [number, number]; // [height, width]
type Matrix3 = [number, number, number, number, number, number, number, number, number]; // row-major 3x3

export function zoomBounds(zoom: AugmentationConfig['zoom_range']): [number, number] {
  return typeof zoom === 'number' ? [1 - zoom, 1 + zoom] : [zoom[0], zoom[1]];
}

export function isIdentityConfig(cfg: AugmentationConfig): boolean {
  const [zoomLow, zoomHigh] = zoomBounds(cfg.zoom_range);
  const brightnessIdle =
    cfg.brightness_range === undefined || (cfg.brightness_range[0] === 1 && cfg.brightness_range[1] === 1);
  return (
    !cfg.rotation_range &&
    !cfg.width_shift_range &&
    !cfg.height_shift_range &&
    !cfg.shear_range &&
    zoomLow === 1 &&
    zoomHigh === 1 &&
    !cfg.horizontal_flip &&
    !cfg.vertical_flip &&
    brightnessIdle
  );
}

// Keras: a range < 1 is a fraction of the side; an integer >= 1 draws whole pixels in (-range, range);
// any other number >= 1 draws uniform pixels. (YAML `2` and `2.0` both arrive as integers here.)
function drawShift(range: number, side: number, rng: Rng): number {
  if (!range) return 0;
  if (range < 1) return rng.uniform(-range, range) * side;
  if (Number.isInteger(range)) {
    const pixels = rng.int(0, range - 1);
    return rng.next() < 0.5 ? -pixels : pixels;
  }
  return rng.uniform(-range, range);
}

/** Draws one image's parameters in the order of Keras' get_random_transform. */
export function randomTransform(cfg: AugmentationConfig, [height, width]: Size, rng: Rng): TransformParams {
  const theta = cfg.rotation_range ? rng.uniform(-cfg.rotation_range, cfg.rotation_range) : 0;
  const tx = drawShift(cfg.height_shift_range, height, rng);
  const ty = drawShift(cfg.width_shift_range, width, rng);
  const shear = cfg.shear_range ? rng.uniform(-cfg.shear_range, cfg.shear_range) : 0;
  const [zoomLow, zoomHigh] = zoomBounds(cfg.zoom_range);
  const zoomed = zoomLow !== 1 || zoomHigh !== 1;
  const zx = zoomed ? rng.uniform(zoomLow, zoomHigh) : 1;
  const zy = zoomed ? rng.uniform(zoomLow, zoomHigh) : 1;
  // Keras draws both coins whether or not the flip is enabled.
  const flip_horizontal = rng.next() < 0.5 && cfg.horizontal_flip;
  const flip_vertical = rng.next() < 0.5 && cfg.vertical_flip;
  const params: TransformParams = { theta, tx, ty, shear, zx, zy, flip_horizontal, flip_vertical };
  if (cfg.brightness_range) params.brightness = rng.uniform(cfg.brightness_range[0], cfg.brightness_range[1]);
  return params;
}

const multiply = (a: Matrix3, b: Matrix3): Matrix3 => {
  const out = new Array<number>(9) as Matrix3;
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) out[r * 3 + c] = a[r * 3] * b[c] + a[r * 3 + 1] * b[3 + c] + a[r * 3 + 2] * b[6 + c];
  }
  return out;
};

/**
 * The output->input map of Keras' apply_affine_transform followed by its flips, as a row-major 3x3 matrix over
 * (row, col, 1): input pixel = M @ output pixel, pixel centres at integer coordinates.
 */
export function affineMatrix(params: TransformParams, [height, width]: Size): Matrix3 {
  const theta = (params.theta * Math.PI) / 180;
  const shear = (params.shear * Math.PI) / 180;
  const rotation: Matrix3 = [Math.cos(theta), -Math.sin(theta), 0, Math.sin(theta), Math.cos(theta), 0, 0, 0, 1];
  const shift: Matrix3 = [1, 0, params.tx, 0, 1, params.ty, 0, 0, 1];
  const shearing: Matrix3 = [1, -Math.sin(shear), 0, 0, Math.cos(shear), 0, 0, 0, 1];
  const zoom: Matrix3 = [params.zx, 0, 0, 0, params.zy, 0, 0, 0, 1];
  // transform_matrix_offset_center: o_x = h/2 - 0.5 (rows), o_y = w/2 - 0.5 (cols).
  const oRow = height / 2 - 0.5;
  const oCol = width / 2 - 0.5;
  const toCentre: Matrix3 = [1, 0, oRow, 0, 1, oCol, 0, 0, 1];
  const fromCentre: Matrix3 = [1, 0, -oRow, 0, 1, -oCol, 0, 0, 1];
  let matrix = multiply(toCentre, multiply(multiply(multiply(rotation, shift), multiply(shearing, zoom)), fromCentre));
  // Keras flips the warped image: out[p] = warped[F p] = in[M F p].
  if (params.flip_horizontal) matrix = multiply(matrix, [1, 0, 0, 0, -1, width - 1, 0, 0, 1]);
  if (params.flip_vertical) matrix = multiply(matrix, [-1, 0, height - 1, 0, 1, 0, 0, 0, 1]);
  return matrix;
}

/** The 8 numbers tf.image.transform takes: the same output->input map over (x = col, y = row). */
export function projectiveTransform(matrix: Matrix3): number[] {
  const [rr, rc, r0, cr, cc, c0] = matrix;
  // x' = cc*x + cr*y + c0 ; y' = rc*x + rr*y + r0
  return [cc, cr, c0, rc, rr, r0, 0, 0];
}

const isIdentityParams = (p: TransformParams): boolean =>
  p.theta === 0 &&
  p.tx === 0 &&
  p.ty === 0 &&
  p.shear === 0 &&
  p.zx === 1 &&
  p.zy === 1 &&
  !p.flip_horizontal &&
  !p.flip_vertical;

/** Warps each image of the batch by its params (one native call), then applies brightness and clips to 0..255. */
export function applyTransforms(
  batch: tf.Tensor4D,
  params: readonly TransformParams[],
  opts: Pick<AugmentationConfig, 'fill_mode' | 'cval'> = { fill_mode: 'nearest', cval: 0 },
): tf.Tensor4D {
  const [count, height, width] = batch.shape;
  if (params.length !== count) throw new RangeError(`applyTransforms: ${params.length} params for ${count} images`);
  registerNativeTransform();
  return tf.tidy(() => {
    let images: tf.Tensor4D = batch.dtype === 'float32' ? batch : tf.cast(batch, 'float32');
    if (!params.every(isIdentityParams)) {
      const transforms = params.flatMap((p) => projectiveTransform(affineMatrix(p, [height, width])));
      images = tf.image.transform(images, tf.tensor2d(transforms, [count, 8]), 'bilinear', opts.fill_mode, opts.cval);
    }
    if (params.some((p) => p.brightness !== undefined)) {
      // Keras uses PIL's ImageEnhance.Brightness: a plain multiply, clipped to the uint8 range.
      const factors = tf.tensor4d(
        params.map((p) => p.brightness ?? 1),
        [count, 1, 1, 1],
      );
      images = tf.clipByValue(tf.mul<tf.Tensor4D>(images, factors), 0, 255);
    }
    // tidy would hand back the caller's own tensor when nothing happened; always return a new one.
    return images === batch ? images.clone() : images;
  });
}

export function createAugmenter(cfg: AugmentationConfig, imageSize: Size, rng: Rng): Augmenter {
  const identity = isIdentityConfig(cfg);
  return {
    identity,
    augment(batch) {
      if (identity) return tf.tidy(() => (batch.dtype === 'float32' ? batch.clone() : tf.cast(batch, 'float32')));
      const params = Array.from({ length: batch.shape[0] }, () => randomTransform(cfg, imageSize, rng));
      return applyTransforms(batch, params, cfg);
    },
  };
}
