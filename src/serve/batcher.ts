// Concurrent requests' images predicted together: one model call on a batch costs little more than on one image,
// so an item waits at most `waitMs` for others to join it, and a full batch goes at once. One batch runs at a time
// (the model uses every core); what arrives meanwhile forms the next.

export interface Batcher<T, R> {
  /** Each item's result, in order, once the batches holding them have run. */
  submit(items: readonly T[]): Promise<R[]>;
}

export interface BatcherOptions<T, R> {
  maxBatch: number;
  waitMs: number;
  /** The results of a batch, one per item in order. */
  run(items: T[]): Promise<R[]>;
  /** Told each batch's size as it starts. */
  onBatch?(size: number): void;
}

interface Waiting<T, R> {
  item: T;
  since: number;
  resolve(result: R): void;
  reject(error: unknown): void;
}

export function createBatcher<T, R>(opts: BatcherOptions<T, R>): Batcher<T, R> {
  const queue: Waiting<T, R>[] = [];
  let running = false;
  let timer: NodeJS.Timeout | undefined;

  const schedule = () => {
    if (running || queue.length === 0) return;
    clearTimeout(timer);
    const waited = performance.now() - queue[0].since;
    if (queue.length >= opts.maxBatch || waited >= opts.waitMs) void runBatch();
    else timer = setTimeout(runBatch, opts.waitMs - waited);
  };

  const runBatch = async () => {
    clearTimeout(timer);
    timer = undefined;
    if (running || queue.length === 0) return;
    running = true;
    const batch = queue.splice(0, opts.maxBatch);
    opts.onBatch?.(batch.length);
    try {
      const results = await opts.run(batch.map((w) => w.item));
      for (const [i, w] of batch.entries()) w.resolve(results[i]);
    } catch (error) {
      for (const w of batch) w.reject(error);
    } finally {
      running = false;
      schedule();
    }
  };

  return {
    submit(items) {
      const now = performance.now();
      const results = items.map(
        (item) => new Promise<R>((resolve, reject) => queue.push({ item, since: now, resolve, reject })),
      );
      schedule();
      return Promise.all(results);
    },
  };
}
