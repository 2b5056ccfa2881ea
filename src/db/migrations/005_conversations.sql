-- Channels, contacts, conversation sessions and messages: what the inbound processor writes and
-- the read API serves. Every tenant table carries project_id and a row-level security policy.

CREATE TABLE channels (
  id                       uuid PRIMARY KEY,
  project_id               uuid NOT NULL,
  name                     text NOT NULL,
  type                     text NOT NULL CHECK (type IN ('waha', 'whatsapp_cloud')),
  -- Non-secret provider settings (base_url, session, phone_number_id…), shown to users.
  config                   jsonb NOT NULL DEFAULT '{}'::jsonb,
  -- Secret settings (api keys, tokens, app secret, hmac key) encrypted with SECRET_KEY (AES-256-GCM).
  secrets                  text NOT NULL,
  -- Token in the webhook URL we give the provider; compared in constant time at the ingress.
  webhook_token            text NOT NULL,
  -- The provider's name for this channel (WAHA session, Cloud phone_number_id), for lookups.
  external_ref             text,
  status                   text NOT NULL DEFAULT 'inactive' CHECK (status IN ('inactive', 'connecting', 'active', 'error')),
  status_changed_at        timestamptz,
  session_timeout_minutes  integer CHECK (session_timeout_minutes IS NULL OR session_timeout_minutes > 0),
  created_at               timestamptz NOT NULL DEFAULT now(),
  updated_at               timestamptz NOT NULL DEFAULT now(),
  deleted_at               timestamptz
);
CREATE INDEX channels_project ON channels (project_id, created_at DESC) WHERE deleted_at IS NULL;

CREATE TABLE contacts (
  id                    uuid PRIMARY KEY,
  project_id            uuid NOT NULL,
  name                  text,
  -- 'push': last set from a WhatsApp push name (may be replaced by a newer one); 'user': set by a person.
  name_source           text CHECK (name_source IN ('push', 'user')),
  phone                 text,
  wa_id                 text,
  wa_lid                text,
  email                 text,
  tags                  text[] NOT NULL DEFAULT '{}',
  custom_fields         jsonb NOT NULL DEFAULT '{}'::jsonb,
  source                text,
  ad_attribution        jsonb,
  first_interaction_at  timestamptz,
  last_interaction_at   timestamptz,
  total_sessions        integer NOT NULL DEFAULT 0,
  total_messages        integer NOT NULL DEFAULT 0,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  deleted_at            timestamptz
);
-- One live contact per phone, and per LID while the phone is unknown: the inbound upserts target these.
CREATE UNIQUE INDEX contacts_phone ON contacts (project_id, phone) WHERE deleted_at IS NULL AND phone IS NOT NULL;
CREATE UNIQUE INDEX contacts_lid ON contacts (project_id, wa_lid) WHERE deleted_at IS NULL AND phone IS NULL AND wa_lid IS NOT NULL;
CREATE INDEX contacts_list ON contacts (project_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX contacts_tags ON contacts USING gin (tags);

CREATE TABLE sessions (
  id                      uuid PRIMARY KEY,
  project_id              uuid NOT NULL,
  contact_id              uuid NOT NULL REFERENCES contacts (id),
  channel_id              uuid NOT NULL REFERENCES channels (id),
  status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
  started_at              timestamptz NOT NULL,
  last_activity_at        timestamptz NOT NULL,
  ended_at                timestamptz,
  end_reason              text,
  timeout_minutes         integer NOT NULL,
  -- When the inactivity sweeper closes it: last_activity_at + timeout, pushed by each message.
  due_at                  timestamptz,
  message_count           integer NOT NULL DEFAULT 0,
  messages_from_contact   integer NOT NULL DEFAULT 0,
  messages_from_agent     integer NOT NULL DEFAULT 0,
  first_contact_message_at timestamptz,
  first_response_at       timestamptz,
  first_response_seconds  integer,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now()
);
-- At most one active session per contact and channel: concurrent inbound messages upsert into it.
CREATE UNIQUE INDEX sessions_one_active ON sessions (contact_id, channel_id) WHERE status = 'active';
CREATE INDEX sessions_due ON sessions (due_at) WHERE status = 'active';
CREATE INDEX sessions_list ON sessions (project_id, started_at DESC, id DESC);
CREATE INDEX sessions_contact ON sessions (contact_id, started_at DESC);

CREATE TABLE messages (
  id                    uuid PRIMARY KEY,
  project_id            uuid NOT NULL,
  channel_id            uuid NOT NULL REFERENCES channels (id),
  contact_id            uuid NOT NULL REFERENCES contacts (id),
  session_id            uuid REFERENCES sessions (id),
  direction             text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
  from_me               boolean NOT NULL,
  type                  text NOT NULL,
  text                  text,
  media                 jsonb,
  location              jsonb,
  contact_card          jsonb,
  -- The provider's id, exactly as received; unique per channel (the dedupe key). NULL while queued.
  external_id           text,
  status                text NOT NULL,
  sent_at               timestamptz,
  delivered_at          timestamptz,
  read_at               timestamptz,
  played_at             timestamptz,
  failed_at             timestamptz,
  error                 jsonb,
  "timestamp"           timestamptz NOT NULL,
  reply_to_external_id  text,
  reactions             jsonb NOT NULL DEFAULT '{}'::jsonb,
  edited_at             timestamptz,
  revoked_at            timestamptz,
  ad_attribution        jsonb,
  metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_external ON messages (channel_id, external_id);
CREATE INDEX messages_session ON messages (session_id, "timestamp", id);
CREATE INDEX messages_contact ON messages (contact_id, "timestamp" DESC, id DESC);
CREATE INDEX messages_list ON messages (project_id, "timestamp" DESC, id DESC);

-- Raw webhooks the ingress could not hand to the broker in time; the drainer republishes them.
CREATE TABLE inbound_events (
  id           uuid PRIMARY KEY,
  seq          bigint GENERATED ALWAYS AS IDENTITY,
  provider     text NOT NULL,
  channel_id   uuid NOT NULL,
  headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
  body         bytea NOT NULL,
  received_at  timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_events_seq ON inbound_events (seq);

-- Provider payloads we could not understand, kept with the raw body and the reason.
CREATE TABLE IF NOT EXISTS parse_errors (
  id          uuid PRIMARY KEY,
  project_id  uuid,
  channel_id  uuid,
  provider    text NOT NULL,
  event_type  text,
  reason      text NOT NULL,
  body        bytea NOT NULL,
  headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS parse_errors_project ON parse_errors (project_id, created_at DESC);

-- Second wall: inside a tenant transaction (SET LOCAL ROLE ventros_app + app.project_id) only the
-- project's rows are visible or writable, whatever the query says.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['channels', 'contacts', 'sessions', 'messages', 'parse_errors'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
      USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
      WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)$p$, t);
  END LOOP;
END $$;
