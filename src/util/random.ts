// Seeded PRNG (sfc32 seeded through splitmix32): the same seed gives the same stream on every run and platform,
// so shuffles, augmentation and sweeps are reproducible from `training.seed`.

type MutableArrayLike = { [index: number]: unknown; length: number };

export interface Rng {
  /** Float in [0, 1). */
  next(): number;
  /** Float in [a, b). */
  uniform(a: number, b: number): number;
  /** Integer in [a, b], both ends included. */
  int(a: number, b: number): number;
  /** Fisher-Yates shuffle in place (arrays and typed arrays); returns the same array. */
  shuffle<A extends MutableArrayLike>(array: A): A;
  /** An independent generator seeded from this one (advances this one by one draw). */
  fork(): Rng;
}

function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export function createRng(seed: number): Rng {
  if (!Number.isFinite(seed)) throw new TypeError(`Expected a finite seed, got ${seed}`);
  // Fold fractional and >32-bit seeds into 32 bits so every number is a usable seed.
  const seed32 = (Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32)) >>> 0;
  const mix = splitmix32(seed32);
  let a = mix();
  let b = mix();
  let c = mix();
  let d = mix();

  const nextUint32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t;
  };
  // Discard the first outputs: sfc32 mixes its state during the first few rounds.
  for (let i = 0; i < 12; i++) nextUint32();

  const next = (): number => nextUint32() / 4294967296;

  const rng: Rng = {
    next,
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    int: (lo, hi) => {
      const min = Math.ceil(lo);
      const max = Math.floor(hi);
      if (max < min) throw new RangeError(`rng.int: empty range [${lo}, ${hi}]`);
      return min + Math.floor(next() * (max - min + 1));
    },
    shuffle: <A extends MutableArrayLike>(array: A): A => {
      for (let i = array.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        const tmp = array[i];
        array[i] = array[j];
        array[j] = tmp;
      }
      return array;
    },
    fork: () => createRng(nextUint32()),
  };
  return rng;
}
