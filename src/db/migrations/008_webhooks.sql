-- Outbound webhooks: subscriptions, one delivery per (subscription, event), and every attempt.
-- A delivery moves pending → sending → succeeded | retrying → … → dead; its due time lives here
-- (next_attempt_at), not in the broker, and a scheduler re-enqueues rows when they come due.

CREATE TABLE webhook_subscriptions (
  id                          uuid PRIMARY KEY,
  project_id                  uuid NOT NULL,
  name                        text,
  url                         text NOT NULL,
  -- Filters: exact types, `prefix.*` or `*` (validated against the event catalogue on save).
  events                      text[] NOT NULL,
  -- Custom request headers, sent before (and never instead of) our own.
  headers                     jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- whsec_… secrets sealed with SECRET_KEY (AES-256-GCM). During a rotation the previous one
  -- keeps signing too until it expires.
  secret                      text NOT NULL,
  previous_secret             text,
  previous_secret_expires_at  timestamptz,
  -- NULL: the server default (WEBHOOK_RETRY_SCHEDULE length + 1, WEBHOOK_TIMEOUT_MS).
  max_attempts                integer CHECK (max_attempts IS NULL OR max_attempts BETWEEN 1 AND 50),
  timeout_seconds             integer CHECK (timeout_seconds IS NULL OR timeout_seconds BETWEEN 1 AND 300),
  rate_limit_per_second       integer CHECK (rate_limit_per_second IS NULL OR rate_limit_per_second > 0),
  -- active = false: no new deliveries (set by the user, or by us with disabled_at/disabled_reason).
  active                      boolean NOT NULL DEFAULT true,
  -- paused: deliveries are still created but wait, without spending attempts, until resumed.
  paused                      boolean NOT NULL DEFAULT false,
  disabled_at                 timestamptz,
  disabled_reason             text,
  -- Endpoint health. failing_since = the first failed attempt after the last success; a
  -- subscription whose failing_since is older than WEBHOOK_DISABLE_AFTER_DAYS is disabled.
  success_count               bigint NOT NULL DEFAULT 0,
  failure_count               bigint NOT NULL DEFAULT 0,
  last_success_at             timestamptz,
  last_failure_at             timestamptz,
  failing_since               timestamptz,
  last_status_code            integer,
  last_error                  text,
  created_at                  timestamptz NOT NULL DEFAULT now(),
  updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_subscriptions_list ON webhook_subscriptions (project_id, created_at DESC, id DESC);
-- The fan-out looks up the active subscriptions of an event's project.
CREATE INDEX webhook_subscriptions_active ON webhook_subscriptions (project_id) WHERE active;
CREATE INDEX webhook_subscriptions_failing ON webhook_subscriptions (failing_since) WHERE active AND failing_since IS NOT NULL;

-- The fan-out caches each project's active subscriptions; any change that affects which
-- subscriptions an event goes to is announced (payload: the project id) so the caches drop it.
CREATE FUNCTION webhook_subscriptions_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ventros_webhook_subscriptions', (CASE WHEN TG_OP = 'DELETE' THEN OLD.project_id ELSE NEW.project_id END)::text);
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_subscriptions_notify
  AFTER INSERT OR DELETE OR UPDATE OF active, events, project_id ON webhook_subscriptions
  FOR EACH ROW EXECUTE FUNCTION webhook_subscriptions_notify();

CREATE TABLE webhook_deliveries (
  id                uuid PRIMARY KEY,
  project_id        uuid NOT NULL,
  subscription_id   uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
  event_id          uuid NOT NULL,
  event_type        text NOT NULL,
  -- The exact bytes we sign and send, built once: every attempt sends the same body.
  body              text NOT NULL,
  status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'retrying', 'succeeded', 'dead')),
  -- Attempts started (an attempt counts from its claim, so a delivery that keeps killing its
  -- dispatcher still ends up dead instead of looping).
  attempts          integer NOT NULL DEFAULT 0,
  -- pending/retrying: when it may go out. NULL once succeeded or dead.
  next_attempt_at   timestamptz,
  -- sending: the claim's lease; past it the dispatcher is presumed dead and the row is retried.
  locked_until      timestamptz,
  -- When the id was last put on webhooks.outbound, so the scheduler does not enqueue it twice.
  enqueued_at       timestamptz,
  last_status_code  integer,
  last_error        text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (locked_until) WHERE status = 'sending';
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (subscription_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_project ON webhook_deliveries (project_id, created_at DESC, id DESC);

CREATE TABLE webhook_attempts (
  delivery_id       uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
  n                 integer NOT NULL,
  project_id        uuid NOT NULL,
  at                timestamptz NOT NULL,
  status_code       integer,
  duration_ms       integer,
  -- classify.ts's class (success, server_error, timeout…), or `interrupted` for an attempt whose
  -- dispatcher died before it could record the outcome.
  error_class       text NOT NULL,
  error             text,
  response_excerpt  text,
  PRIMARY KEY (delivery_id, n)
);

-- Second wall: inside a tenant transaction only the project's rows are visible or writable.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['webhook_subscriptions', 'webhook_deliveries', 'webhook_attempts'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
      USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
      WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)$p$, t);
  END LOOP;
END $$;
