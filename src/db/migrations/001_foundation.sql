-- Foundation: the application role that row-level security binds, and the tables of the
-- Postgres-backed broker (queues, bindings, consumers) plus the shared dead-letter store.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ventros_app') THEN
    CREATE ROLE ventros_app NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- another database on this server created it at the same moment
END $$;

GRANT USAGE ON SCHEMA public TO ventros_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ventros_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ventros_app;

-- Topic bindings of the Postgres broker: publishing to an exchange inserts one row per bound queue.
CREATE TABLE queue_bindings (
  exchange   text NOT NULL,
  queue      text NOT NULL,
  pattern    text NOT NULL,
  regex      text NOT NULL,
  PRIMARY KEY (exchange, queue, pattern)
);

CREATE TABLE queue_messages (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue         text NOT NULL,
  message_id    text NOT NULL,
  routing_key   text NOT NULL,
  headers       jsonb NOT NULL DEFAULT '{}'::jsonb,
  body          bytea NOT NULL,
  attempts      integer NOT NULL DEFAULT 0,  -- handler failures so far
  deliveries    integer NOT NULL DEFAULT 0,  -- times claimed (a crash leaves this ahead of attempts)
  available_at  timestamptz NOT NULL DEFAULT now(),
  locked_until  timestamptz,
  locked_by     text,
  last_error    text,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_claim ON queue_messages (queue, available_at, id);

-- Live consumers of the Postgres broker, for queue stats (a row per running consumer).
CREATE TABLE queue_consumers (
  consumer_id   text PRIMARY KEY,
  queue         text NOT NULL,
  heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_consumers_queue ON queue_consumers (queue);

-- Messages that exhausted their retries (or crashed their consumer too often), on either broker.
CREATE TABLE dead_letters (
  id            uuid PRIMARY KEY,
  queue         text NOT NULL,
  message_id    text NOT NULL,
  routing_key   text NOT NULL,
  headers       jsonb NOT NULL DEFAULT '{}'::jsonb,
  body          bytea NOT NULL,
  error         text NOT NULL,
  attempts      integer NOT NULL,
  project_id    uuid,
  created_at    timestamptz NOT NULL DEFAULT now(),
  replayed_at   timestamptz,
  replay_count  integer NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, created_at DESC);
CREATE INDEX dead_letters_project ON dead_letters (project_id, created_at DESC);
