// Groups work that arrives close together so it shares one database transaction: one BEGIN/COMMIT
// (and one fsync) for many webhooks instead of one each. Items submitted in the same turn of the
// event loop go together; while `maxInflight` batches are running, new items wait and the next
// batch is simply bigger. So an idle system adds no latency and a busy one batches more.
export type BatchRunner<I, O> = (key: string, items: I[]) => Promise<O[]>;

export type Batcher<I, O> = {
  /** Resolves with this item's result once its batch has run; rejects when the batch throws. */
  submit(key: string, item: I): Promise<O>;
};

type Waiting<I, O> = { item: I; resolve: (o: O) => void; reject: (err: unknown) => void };

export function makeBatcher<I, O>(run: BatchRunner<I, O>, opts: { maxBatch: number; maxInflight: number }): Batcher<I, O> {
  // Keys in the order they first waited: each pump serves the longest-waiting key first.
  const queues = new Map<string, Waiting<I, O>[]>();
  let inflight = 0;
  let scheduled = false;

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(pump);
  };

  function pump(): void {
    scheduled = false;
    for (const [key, queue] of queues) {
      if (inflight >= opts.maxInflight) return;
      const batch = queue.splice(0, opts.maxBatch);
      queues.delete(key);
      if (queue.length) queues.set(key, queue); // the rest goes to the back of the line
      inflight++;
      run(key, batch.map((w) => w.item))
        .then(
          (results) => batch.forEach((w, i) => w.resolve(results[i])),
          (err) => batch.forEach((w) => w.reject(err)),
        )
        .finally(() => {
          inflight--;
          if (queues.size) schedule();
        });
    }
  }

  return {
    submit(key, item) {
      return new Promise<O>((resolve, reject) => {
        let queue = queues.get(key);
        if (!queue) queues.set(key, (queue = []));
        queue.push({ item, resolve, reject });
        schedule();
      });
    },
  };
}
