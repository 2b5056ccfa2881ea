// Groups work that arrives close together so it shares one database transaction: one BEGIN/COMMIT
// (and one fsync) for many webhooks instead of one each. Items submitted in the same turn of the
// event loop go together; while `maxInflight` batches are running, new items wait and the next
// batch is simply bigger. So an idle system adds no latency and a busy one batches more.
//
// With `deadlineMs`, an item not answered that long after it was submitted is rejected with
// DeadlineError; one still waiting for a batch at that time is taken out of the line, so it never
// runs. A batch all of whose items have been rejected so gives its slot back even if its run has
// not ended: a run that never ends must not stop the line behind it. Timers are per batch and one
// for the line, never per item (a timer per item costs more than the rest of a webhook's hand-off),
// and nothing is kept once answered.
export type BatchRunner<I, O> = (key: string, items: I[]) => Promise<O[]>;

export type Batcher<I, O> = {
  /** Resolves with this item's result once its batch has run; rejects when the batch throws. */
  submit(key: string, item: I): Promise<O>;
};

export type BatcherOptions = { maxBatch: number; maxInflight: number; deadlineMs?: number; deadlineMessage?: string };

export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

type Entry<I, O> = { item: I; resolve: (o: O) => void; reject: (err: unknown) => void; due: number; done: boolean };

export function makeBatcher<I, O>(run: BatchRunner<I, O>, opts: BatcherOptions): Batcher<I, O> {
  // Keys in the order they first waited: each pump serves the longest-waiting key first.
  const queues = new Map<string, Entry<I, O>[]>();
  let inflight = 0;
  let scheduled = false;
  let waitTimer: NodeJS.Timeout | undefined;
  const { deadlineMs } = opts;
  const late = () => new DeadlineError(opts.deadlineMessage ?? `no answer within ${deadlineMs} ms`);

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(pump);
  };

  const settle = (e: Entry<I, O>, ok: boolean, value: unknown) => {
    if (e.done) return;
    e.done = true;
    if (ok) e.resolve(value as O);
    else e.reject(value);
  };

  /** Rejects the items of `queue` (in submission order, so in deadline order) that are due. */
  function rejectDue(queue: Entry<I, O>[], now: number): void {
    let due = 0;
    while (due < queue.length && queue[due].due <= now) due++;
    for (const e of queue.splice(0, due)) settle(e, false, late());
  }

  function pump(): void {
    scheduled = false;
    const now = deadlineMs === undefined ? 0 : Date.now();
    for (const [key, queue] of queues) {
      if (inflight >= opts.maxInflight) break;
      if (deadlineMs !== undefined) rejectDue(queue, now); // a slot came free after their deadline
      const batch = queue.splice(0, opts.maxBatch);
      queues.delete(key);
      if (queue.length) queues.set(key, queue); // the rest goes to the back of the line
      if (batch.length === 0) continue;
      inflight++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        inflight--;
        if (queues.size) schedule();
      };
      let timer: NodeJS.Timeout | undefined;
      const expire = () => {
        const at = Date.now();
        const open = batch.filter((e) => !e.done);
        rejectDue(open, at);
        if (open.length === 0) release();
        else timer = setTimeout(expire, open[0].due - at);
      };
      if (deadlineMs !== undefined) timer = setTimeout(expire, batch[0].due - now);
      run(key, batch.map((e) => e.item))
        .then(
          (results) => batch.forEach((e, i) => settle(e, true, results[i])),
          (err) => batch.forEach((e) => settle(e, false, err)),
        )
        .finally(() => {
          clearTimeout(timer);
          release();
        });
    }
    if (queues.size === 0 && waitTimer) {
      clearTimeout(waitTimer);
      waitTimer = undefined;
    }
    watchWaiting();
  }

  /** While items wait for a free slot, one timer takes out those whose deadline has come. */
  function watchWaiting(): void {
    if (deadlineMs === undefined || waitTimer || queues.size === 0) return;
    let first = Infinity;
    for (const queue of queues.values()) first = Math.min(first, queue[0].due);
    waitTimer = setTimeout(() => {
      waitTimer = undefined;
      const now = Date.now();
      for (const [key, queue] of queues) {
        rejectDue(queue, now);
        if (queue.length === 0) queues.delete(key);
      }
      watchWaiting();
    }, first - Date.now());
  }

  return {
    submit(key, item) {
      return new Promise<O>((resolve, reject) => {
        const due = deadlineMs === undefined ? 0 : Date.now() + deadlineMs;
        let queue = queues.get(key);
        if (!queue) queues.set(key, (queue = []));
        queue.push({ item, resolve, reject, due, done: false });
        schedule();
      });
    },
  };
}
