import * as tf from '@tensorflow/tfjs-node';
import { describe, expect, it } from 'vitest';
import type { AugmentationConfig } from '../../src/config/types.ts';
import {
  affineMatrix,
  applyTransforms,
  createAugmenter,
  IDENTITY_TRANSFORM,
  randomTransform,
  NOTEBOOK_AUGMENTATION,
  type TransformParams,
} from '../../src/data/augment.ts';
import { createRng } from '../../src/util/random.ts';

const NO_AUGMENTATION: AugmentationConfig = {
  rotation_range: 0,
  width_shift_range: 0,
  height_shift_range: 0,
  shear_range: 0,
  zoom_range: 0,
  horizontal_flip: false,
  vertical_flip: false,
  fill_mode: 'nearest',
  cval: 0,
};
const NOTEBOOK = NOTEBOOK_AUGMENTATION;

const params = (p: Partial<TransformParams>): TransformParams => ({ ...IDENTITY_TRANSFORM, ...p });

/** Single-channel image [h, w] with the given bright (255) pixels. */
const pixels = (h: number, w: number, bright: [number, number][]): number[][] => {
  const image = Array.from({ length: h }, () => new Array<number>(w).fill(0));
  for (const [r, c] of bright) image[r][c] = 255;
  return image;
};

const warp = (image: number[][], p: Partial<TransformParams>, fill: Partial<AugmentationConfig> = {}): number[][] => {
  const h = image.length;
  const w = image[0].length;
  const input = tf.tensor4d(image.flat(), [1, h, w, 1], 'int32');
  const output = applyTransforms(input, [params(p)], { fill_mode: 'nearest', cval: 0, ...fill });
  const values = Array.from(output.dataSync());
  tf.dispose([input, output]);
  return Array.from({ length: h }, (_, r) => values.slice(r * w, (r + 1) * w));
};

const brightPixels = (image: number[][], threshold = 128): [number, number][] =>
  image.flatMap((row, r) => row.flatMap((v, c) => (v > threshold ? [[r, c] as [number, number]] : [])));

// --- An independent reference: Keras' apply_affine_transform (documented (row, col) convention) with
// scipy.ndimage.affine_transform(order=1) sampling, then Keras' flips of the warped array.
type M3 = number[][];
const matmul = (a: M3, b: M3): M3 => a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
function kerasMatrix(p: TransformParams, h: number, w: number): M3 {
  const t = (p.theta * Math.PI) / 180;
  const s = (p.shear * Math.PI) / 180;
  let m: M3 = [
    [Math.cos(t), -Math.sin(t), 0],
    [Math.sin(t), Math.cos(t), 0],
    [0, 0, 1],
  ];
  m = matmul(m, [
    [1, 0, p.tx],
    [0, 1, p.ty],
    [0, 0, 1],
  ]);
  m = matmul(m, [
    [1, -Math.sin(s), 0],
    [0, Math.cos(s), 0],
    [0, 0, 1],
  ]);
  m = matmul(m, [
    [p.zx, 0, 0],
    [0, p.zy, 0],
    [0, 0, 1],
  ]);
  const ox = h / 2 - 0.5;
  const oy = w / 2 - 0.5;
  return matmul(
    matmul(
      [
        [1, 0, ox],
        [0, 1, oy],
        [0, 0, 1],
      ],
      m,
    ),
    [
      [1, 0, -ox],
      [0, 1, -oy],
      [0, 0, 1],
    ],
  );
}
function scipyAffine(image: number[][], m: M3, mode: 'nearest' | 'reflect'): number[][] {
  const h = image.length;
  const w = image[0].length;
  const extend = (i: number, n: number): number => {
    if (mode === 'nearest') return Math.min(Math.max(i, 0), n - 1);
    const period = 2 * n; // reflect: (d c b a | a b c d | d c b a)
    const k = ((i % period) + period) % period;
    return k < n ? k : period - 1 - k;
  };
  const at = (r: number, c: number): number => image[extend(r, h)][extend(c, w)];
  return image.map((row, r) =>
    row.map((_, c) => {
      let ir = m[0][0] * r + m[0][1] * c + m[0][2];
      let ic = m[1][0] * r + m[1][1] * c + m[1][2];
      if (mode === 'nearest') {
        ir = Math.min(Math.max(ir, 0), h - 1);
        ic = Math.min(Math.max(ic, 0), w - 1);
      }
      const r0 = Math.floor(ir);
      const c0 = Math.floor(ic);
      const fr = ir - r0;
      const fc = ic - c0;
      return (
        (1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c0 + 1)) +
        fr * ((1 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1))
      );
    }),
  );
}
function kerasReference(image: number[][], p: TransformParams, mode: 'nearest' | 'reflect'): number[][] {
  let out = scipyAffine(image, kerasMatrix(p, image.length, image[0].length), mode);
  if (p.flip_horizontal) out = out.map((row) => [...row].reverse());
  if (p.flip_vertical) out = [...out].reverse();
  return out;
}

describe('applyTransforms (exact parameters)', () => {
  it('rotates +90 degrees so that the top-right corner goes to the bottom-right (Keras formula)', () => {
    // Keras: in = R (out - c) + c with R = [[0, -1], [1, 0]], c = (4, 4). For out = (8, 8):
    // in_row = -(8 - 4) + 4 = 0, in_col = (8 - 4) + 4 = 8, so input (0, 8) lands at output (8, 8).
    const out = warp(pixels(9, 9, [[0, 8]]), { theta: 90 });
    expect(brightPixels(out)).toEqual([[8, 8]]);
    expect(out[8][8]).toBeCloseTo(255, 3);
    // and the bottom-left corner goes to the top-left
    expect(brightPixels(warp(pixels(9, 9, [[8, 0]]), { theta: 90 }))).toEqual([[0, 0]]);
  });

  it('mirrors columns on a horizontal flip and rows on a vertical flip', () => {
    expect(brightPixels(warp(pixels(8, 8, [[1, 2]]), { flip_horizontal: true }))).toEqual([[1, 5]]);
    expect(brightPixels(warp(pixels(8, 8, [[1, 2]]), { flip_vertical: true }))).toEqual([[6, 2]]);
    expect(brightPixels(warp(pixels(8, 8, [[1, 2]]), { flip_horizontal: true, flip_vertical: true }))).toEqual([
      [6, 5],
    ]);
  });

  it('shifts rows by tx (height) and columns by ty (width); content moves against the sign as in Keras', () => {
    const image = pixels(9, 9, [[4, 4]]);
    expect(brightPixels(warp(image, { tx: 2 }))).toEqual([[2, 4]]);
    expect(brightPixels(warp(image, { tx: -3 }))).toEqual([[7, 4]]);
    expect(brightPixels(warp(image, { ty: 2 }))).toEqual([[4, 2]]);
  });

  it('zooms 2x about the centre with zx = zy = 0.5', () => {
    const block = pixels(
      9,
      9,
      [3, 4, 5].flatMap((r) => [3, 4, 5].map((c) => [r, c] as [number, number])),
    );
    const out = warp(block, { zx: 0.5, zy: 0.5 });
    const expected = [2, 3, 4, 5, 6].flatMap((r) => [2, 3, 4, 5, 6].map((c) => [r, c]));
    expect(brightPixels(out, 254)).toEqual(expected);
    // out row 1 samples input row 0.5 * (1 - 4) + 4 = 2.5: half way into the block, bilinearly.
    expect(out[1][4]).toBeCloseTo(127.5, 2);
    expect(out[0].every((v) => v === 0)).toBe(true);
  });

  it('shears a horizontal line into a slope of sin(shear) rows per column', () => {
    // Keras shear (row, col): in_row = (r - 4) - sin(s) (c - 4) + 4, so row 4 of the input shows at
    // r = 4 + sin(30°) (c - 4): (2, 0), (3, 2), (4, 4), (5, 6), (6, 8).
    const line = pixels(
      9,
      9,
      Array.from({ length: 9 }, (_, c) => [4, c] as [number, number]),
    );
    const out = warp(line, { shear: 30 });
    for (const [r, c] of [
      [2, 0],
      [3, 2],
      [4, 4],
      [5, 6],
      [6, 8],
    ])
      expect(out[r][c]).toBeCloseTo(255, 2);
    expect(out[4][0]).toBeCloseTo(0, 3);
    expect(out[2][8]).toBeCloseTo(0, 3);
  });

  it('matches the Keras/scipy reference on a gradient for combined parameters, fill modes and flips', () => {
    const [h, w] = [7, 10]; // non-square to catch row/column mix-ups
    const gradient = Array.from({ length: h }, (_, r) =>
      Array.from({ length: w }, (_, c) => 20 * r + 3 * c + ((r * c) % 5)),
    );
    const cases: [Partial<TransformParams>, 'nearest' | 'reflect'][] = [
      [{ theta: 17, tx: 1.3, ty: -2.2, shear: 11, zx: 0.9, zy: 1.15 }, 'nearest'],
      [{ theta: -33, tx: -0.7, ty: 1.6, shear: -8, zx: 1.2, zy: 0.8, flip_horizontal: true }, 'nearest'],
      [{ theta: 25, ty: 3.5, zx: 1.1, zy: 1.1, flip_vertical: true }, 'reflect'],
      [{ tx: 2.5, ty: -4.25, flip_horizontal: true }, 'reflect'],
    ];
    for (const [p, mode] of cases) {
      const expected = kerasReference(gradient, params(p), mode);
      const actual = warp(gradient, p, { fill_mode: mode });
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) expect(actual[r][c]).toBeCloseTo(expected[r][c], 2);
    }
  });

  it('fills with cval in constant mode', () => {
    const out = warp(pixels(5, 5, [[2, 2]]), { ty: 3 }, { fill_mode: 'constant', cval: 77 });
    expect(out[0][4]).toBeCloseTo(77, 3);
    expect(out[2][0]).toBeCloseTo(0, 3);
  });

  it('multiplies brightness per image after the warp and clips to 255', () => {
    const input = tf.tensor4d([100, 200, 100, 200], [2, 1, 2, 1], 'float32');
    const out = applyTransforms(input, [params({ brightness: 0.5 }), params({ brightness: 1.5 })]);
    expect(Array.from(out.dataSync())).toEqual([50, 100, 150, 255]);
    tf.dispose([input, out]);
  });

  it('exposes the composed matrix (rows, cols, output -> input)', () => {
    const m = affineMatrix(params({ flip_horizontal: true }), [4, 6]);
    expect(m.map((v) => Math.round(v * 1e9) / 1e9 + 0)).toEqual([1, 0, 0, 0, -1, 5, 0, 0, 1]);
  });
});

describe('createAugmenter', () => {
  const batch = () =>
    tf.tensor4d(
      Array.from({ length: 2 * 6 * 6 * 3 }, (_, i) => i % 256),
      [2, 6, 6, 3],
      'int32',
    );

  it('draws the same parameters for the same seed, within the configured ranges', () => {
    const draw = (seed: number) => {
      const rng = createRng(seed);
      return Array.from({ length: 50 }, () => randomTransform(NOTEBOOK, [150, 150], rng));
    };
    const a = draw(1);
    expect(draw(1)).toEqual(a);
    expect(draw(2)).not.toEqual(a);
    for (const p of a) {
      expect(Math.abs(p.theta)).toBeLessThanOrEqual(40);
      expect(Math.abs(p.tx)).toBeLessThanOrEqual(30);
      expect(Math.abs(p.ty)).toBeLessThanOrEqual(30);
      expect(Math.abs(p.shear)).toBeLessThanOrEqual(0.2);
      expect(p.zx).toBeGreaterThanOrEqual(0.8);
      expect(p.zy).toBeLessThanOrEqual(1.2);
      expect(p.flip_vertical).toBe(false);
      expect(p.brightness).toBeUndefined();
    }
    expect(new Set(a.map((p) => p.flip_horizontal)).size).toBe(2);
    expect(new Set(a.map((p) => p.zx)).size).toBe(50); // zx, zy drawn independently per image
    expect(a.some((p) => p.zx !== p.zy)).toBe(true);
  });

  it('treats an integer shift range >= 1 as whole pixels, like Keras', () => {
    const rng = createRng(3);
    const shifts = Array.from({ length: 200 }, () =>
      randomTransform({ ...NO_AUGMENTATION, height_shift_range: 2 }, [9, 9], rng),
    );
    expect(new Set(shifts.map((p) => p.tx))).toEqual(new Set([-1, 0, 1]));
    expect(shifts.every((p) => p.ty === 0)).toBe(true);
  });

  it('moves content along rows only when only height_shift_range is set', () => {
    const augmenter = createAugmenter({ ...NO_AUGMENTATION, height_shift_range: 2 }, [9, 9], createRng(11));
    const image = tf.tensor4d(pixels(9, 9, [[4, 4]]).flat(), [1, 9, 9, 1], 'int32');
    const columns = new Set<number>();
    const rows = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const out = augmenter.augment(image);
      const values = out.dataSync();
      out.dispose();
      const index = values.findIndex((v) => v > 128);
      rows.add(Math.floor(index / 9));
      columns.add(index % 9);
    }
    image.dispose();
    expect(columns).toEqual(new Set([4]));
    expect(rows).toEqual(new Set([3, 4, 5]));
  });

  it('is the identity for an all-zero config: a float32 copy, no warp', () => {
    const augmenter = createAugmenter(NO_AUGMENTATION, [6, 6], createRng(0));
    expect(augmenter.identity).toBe(true);
    const input = batch();
    const out = augmenter.augment(input);
    expect(out.dtype).toBe('float32');
    expect(out).not.toBe(input);
    expect(Array.from(out.dataSync())).toEqual(Array.from(input.dataSync()));
    tf.dispose([input, out]);
  });

  it('returns float32 0..255, the same for the same seed, and leaks no tensors', () => {
    const input = batch();
    const run = (seed: number) => {
      const augmenter = createAugmenter({ ...NOTEBOOK, brightness_range: [0.5, 1.5] }, [6, 6], createRng(seed));
      expect(augmenter.identity).toBe(false);
      const out = augmenter.augment(input);
      const values = Array.from(out.dataSync());
      expect(out.dtype).toBe('float32');
      expect(out.shape).toEqual([2, 6, 6, 3]);
      out.dispose();
      return values;
    };
    const first = run(5);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) run(5);
    expect(tf.memory().numTensors).toBe(before);
    expect(run(5)).toEqual(first);
    expect(run(6)).not.toEqual(first);
    expect(Math.min(...first)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...first)).toBeLessThanOrEqual(255);
    input.dispose();
  });
});
