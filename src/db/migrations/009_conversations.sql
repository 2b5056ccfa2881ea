-- Conversations: session lifecycle (end metrics, who closed), contact totals kept by the
-- session.ended consumer, pipelines (where each contact stands, and the history of its moves) and
-- outbound messages (the send schedule of a queued reply).

-- ---- sessions --------------------------------------------------------------------------------
-- Total time the contact waited for answers (each run of contact messages, from its first message
-- to the next reply); computed once, when the session ends.
ALTER TABLE sessions ADD COLUMN customer_wait_seconds integer;
-- Who ended it by hand ('user:<id>' / 'api_key:<id>'); NULL when the inactivity timer did.
ALTER TABLE sessions ADD COLUMN closed_by text;

-- ---- contacts: conversation totals -----------------------------------------------------------
-- Kept by the session.ended consumer (total_sessions and total_messages move with each message).
ALTER TABLE contacts ADD COLUMN ended_sessions integer NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN total_session_seconds bigint NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN last_session_ended_at timestamptz;

-- ---- pipelines -------------------------------------------------------------------------------
ALTER TABLE pipelines ADD COLUMN description text;
ALTER TABLE pipelines ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Where a contact stands in each pipeline it is in: one row per (contact, pipeline).
CREATE TABLE contact_pipeline_statuses (
  project_id   uuid NOT NULL,
  contact_id   uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
  pipeline_id  uuid NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
  status_id    uuid NOT NULL REFERENCES pipeline_statuses (id) ON DELETE CASCADE,
  changed_at   timestamptz NOT NULL,
  PRIMARY KEY (contact_id, pipeline_id)
);
CREATE INDEX contact_pipeline_statuses_status ON contact_pipeline_statuses (status_id);

-- Every move, in the order it was made (seq), with who made it. Append-only.
CREATE TABLE contact_pipeline_history (
  id               uuid PRIMARY KEY,
  seq              bigint GENERATED ALWAYS AS IDENTITY,
  project_id       uuid NOT NULL,
  contact_id       uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
  pipeline_id      uuid NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
  from_status_id   uuid REFERENCES pipeline_statuses (id) ON DELETE SET NULL,
  to_status_id     uuid NOT NULL REFERENCES pipeline_statuses (id) ON DELETE CASCADE,
  notes            text,
  -- 'user' | 'api_key' | 'system' (a consumer, e.g. the default-pipeline entry of a new contact)
  changed_by_type  text NOT NULL CHECK (changed_by_type IN ('user', 'api_key', 'system')),
  changed_by_id    text,
  changed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_pipeline_history_contact ON contact_pipeline_history (contact_id, seq);

-- ---- outbound messages -----------------------------------------------------------------------
-- A queued reply is a row in `messages` (status 'queued'); these columns are its send schedule.
-- The row is the truth and the messages.outbound queue only a wake-up, so a lost queue message or
-- a retry due while every worker was down is picked up by the scheduler from here.
ALTER TABLE messages ADD COLUMN send_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN next_send_at timestamptz;
-- Handed to the queue at this time (a row due later than this needs handing again).
ALTER TABLE messages ADD COLUMN enqueued_at timestamptz;
-- A sender holds the row while it talks to the provider, so two senders never send one message.
ALTER TABLE messages ADD COLUMN send_lease_until timestamptz;
CREATE INDEX messages_outbound_due ON messages (next_send_at) WHERE status = 'queued';

-- ---- row-level security (the 004 pattern) ----------------------------------------------------
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['contact_pipeline_statuses', 'contact_pipeline_history'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
      USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
      WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)$p$, t);
  END LOOP;
END $$;
