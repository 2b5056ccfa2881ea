-- The webhook scheduler's pass walked `webhook_deliveries_due` (every waiting delivery, by
-- next_attempt_at) from the oldest due row and dropped, in the join, every delivery a paused
-- subscription holds and every one already on the queue: a paused busy subscription, or a burst
-- of new deliveries still on webhooks.outbound, made each pass (every second, in every worker)
-- read all of them. And it took a delivery marked enqueued more than a minute ago for one whose
-- message was lost, so a backlog longer than a minute was put on the queue again every minute.
-- Each of the scheduler's statements now has an index holding only the rows it wants
-- (webhook-dispatch.sql.ts, scheduler.ts), so a pass costs what it takes, not the backlog.

-- Set by the scheduler on a due delivery of a paused subscription (under a share lock on the
-- subscription, so that a resume in between is seen): it leaves the scheduler's index until the
-- resume clears it (`clearEnqueued`).
ALTER TABLE webhook_deliveries ADD COLUMN held boolean NOT NULL DEFAULT false;

DROP INDEX webhook_deliveries_due;
-- What the scheduler may take: waiting, not on the queue, not held for a paused subscription.
CREATE INDEX webhook_deliveries_takeable ON webhook_deliveries (next_attempt_at)
  WHERE status IN ('pending', 'retrying') AND enqueued_at IS NULL AND NOT held;
-- Marked enqueued: looked at from the oldest, and only up to a cutoff (a message taken as lost).
CREATE INDEX webhook_deliveries_enqueued ON webhook_deliveries (enqueued_at)
  WHERE status IN ('pending', 'retrying') AND enqueued_at IS NOT NULL;

-- The scheduler's marks whose send is not confirmed yet: written with the marks, deleted once the
-- broker confirmed the send. One left behind a grace later is a scheduler that stopped in between:
-- its deliveries still so marked are taken again. (A row of its own, not a column of the
-- deliveries: writing the delivery rows after the send would lock them just when the dispatcher
-- claims them, and a claim skips a locked row.) Deliveries marked before this migration have no
-- entry: like the fan-out's marks, they are taken as lost once the webhook queues are seen empty,
-- or after the scheduler's backstop (an hour).
CREATE TABLE webhook_unconfirmed_enqueues (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mark         timestamptz NOT NULL,
  delivery_ids uuid[] NOT NULL
);
