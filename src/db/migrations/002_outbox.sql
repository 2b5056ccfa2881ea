-- The transactional outbox, which is also the event log once rows are published.
CREATE TABLE outbox (
  seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id              uuid NOT NULL UNIQUE,
  type            text NOT NULL,
  version         integer NOT NULL DEFAULT 1,
  project_id      uuid,
  aggregate_type  text NOT NULL,
  aggregate_id    text NOT NULL,
  data            jsonb NOT NULL,
  occurred_at     timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  published_at    timestamptz,
  publish_attempts integer NOT NULL DEFAULT 0,
  last_error      text
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_log ON outbox (project_id, occurred_at DESC, id DESC) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_log_type ON outbox (project_id, type, occurred_at DESC) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_log_aggregate ON outbox (project_id, aggregate_id, occurred_at DESC) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wakes the relay when events commit (NOTIFY is delivered at commit, never for a rollback).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ventros_outbox', '');
  RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotent consumers record each event they applied, in the same transaction as the effect.
CREATE TABLE processed_events (
  consumer      text NOT NULL,
  event_id      uuid NOT NULL,
  processed_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
