-- A commit that appends to the outbox notifies the relays only while one of them is asleep.
--
-- Why: PostgreSQL serialises the commits of every transaction that sent a NOTIFY (it holds a
-- database-wide lock from the notification until the commit is flushed), so notifying on every
-- outbox insert caps how many event-writing transactions can commit per second. A busy relay
-- does not need the notification: it claims again as soon as a batch is done and polls every few
-- milliseconds while events flow. Only a relay that has gone idle and sleeps on the long poll
-- needs waking.
--
-- How it stays correct (no commit is ever missed by a sleeping relay): a relay going to sleep
-- first registers here, then takes this advisory lock exclusively, which waits until every writer
-- that may have checked this table before the registration was visible has committed or rolled
-- back (writers hold the lock shared from their insert until they end), then claims once more.
-- A writer after that sees the registration and notifies. Rows of relays that died asleep only
-- cause notifications nobody needs; relays delete rows not refreshed for five minutes.
CREATE TABLE outbox_relay_sleepers (
  relay_id  uuid PRIMARY KEY,
  seen_at   timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1986097264, 1);
  IF EXISTS (SELECT 1 FROM outbox_relay_sleepers) THEN
    PERFORM pg_notify('ventros_outbox', '');
  END IF;
  RETURN NULL;
END $$;
