-- Accounts and tenancy: users, projects and their members, API keys, login tokens, login
-- throttling, Idempotency-Key records, and the minimal pipelines every project starts with.
--
-- ============================================================================================
-- THE TENANT PATTERN — copy it for every table that holds a project's data.
--
--   1. The table has `project_id uuid NOT NULL` (the project's own row: its `id`).
--   2. Row-level security is enabled and one policy named tenant_isolation checks that column
--      against the transaction's project, for reads (USING) and writes (WITH CHECK):
--
--        ALTER TABLE t ENABLE ROW LEVEL SECURITY;
--        CREATE POLICY tenant_isolation ON t
--          USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
--          WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid);
--
-- withTransaction(db, fn, { projectId }) sets app.project_id and SET LOCAL ROLE ventros_app, a
-- role that is neither superuser nor table owner, so the policy applies even on PGlite (which
-- runs as superuser). With no project set the setting is '' → NULL → no row matches: a tenant
-- transaction that forgot its project sees nothing rather than everything. Queries still filter
-- by project_id themselves; the policy is the second wall, not the first.
--
-- Global tables (users, auth_tokens, login_attempts, schema_migrations, broker tables) have no
-- policy. Lookups that must cross tenants — resolving a key or token to its project, listing the
-- projects a user belongs to — run outside a tenant transaction, as the connecting role.
-- ============================================================================================

CREATE TABLE users (
  id             uuid PRIMARY KEY,
  -- Stored lower-cased (the service normalises), so uniqueness is case-insensitive.
  email          text NOT NULL UNIQUE CHECK (email = lower(email)),
  name           text NOT NULL,
  -- scrypt$<N>$<r>$<p>$<salt>$<hash>: the parameters travel with the hash so they can be raised.
  password_hash  text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
  id          uuid PRIMARY KEY,
  name        text NOT NULL,
  -- Free-form project settings; `default_pipeline_id` is set at registration.
  settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_members (
  project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('admin', 'manager', 'agent', 'viewer')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, user_id)
);
-- "Which projects does this user belong to" (login, X-Project-ID) walks this index.
CREATE INDEX project_members_user ON project_members (user_id, project_id);

CREATE TABLE api_keys (
  id            uuid PRIMARY KEY,
  project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  name          text NOT NULL,
  role          text NOT NULL CHECK (role IN ('admin', 'manager', 'agent', 'viewer')),
  -- The first characters of the key (vtr_xxxxxxxx), so people can tell their keys apart.
  prefix        text NOT NULL,
  -- SHA-256 of the whole key, hex. Keys are 256 random bits, so a fast hash is enough (no
  -- dictionary to slow down); the key itself is shown once and never stored.
  hash          text NOT NULL UNIQUE,
  created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);
CREATE INDEX api_keys_project ON api_keys (project_id, id DESC);

-- Login tokens belong to a user, not a project (X-Project-ID picks one per request).
CREATE TABLE auth_tokens (
  id          uuid PRIMARY KEY,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  hash        text NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expires ON auth_tokens (expires_at);

-- Failed logins, counted per email and per client address over a sliding window. Kept in the
-- database rather than in process memory so N api processes share one limit (an attacker must
-- not gain N times the attempts by spreading requests), and a restart does not reset it.
CREATE TABLE login_attempts (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email       text NOT NULL,
  ip          text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_email ON login_attempts (email, created_at);
CREATE INDEX login_attempts_ip ON login_attempts (ip, created_at);
CREATE INDEX login_attempts_created ON login_attempts (created_at);

-- Idempotency-Key records, per project, kept 24 hours. `status` NULL means the first request is
-- still running. The key is stored only as a hash, and the response body is encrypted under a key
-- derived from the client's Idempotency-Key: a copy of this table does not reveal responses that
-- carry shown-once secrets (a new API key, a webhook secret).
CREATE TABLE idempotency_keys (
  project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  key_hash      text NOT NULL,
  method        text NOT NULL,
  path          text NOT NULL,
  request_hash  text NOT NULL,
  status        integer,
  content_type  text,
  body          bytea,
  created_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz,
  PRIMARY KEY (project_id, key_hash)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Pipelines, minimal: every project gets a default one at registration. Extended later.
CREATE TABLE pipelines (
  id          uuid PRIMARY KEY,
  project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  name        text NOT NULL,
  is_default  boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipelines_project ON pipelines (project_id, id DESC);
CREATE UNIQUE INDEX pipelines_one_default ON pipelines (project_id) WHERE is_default;

CREATE TABLE pipeline_statuses (
  id           uuid PRIMARY KEY,
  pipeline_id  uuid NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
  project_id   uuid NOT NULL,
  name         text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('open', 'active', 'closed')),
  position     integer NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipeline_statuses_pipeline ON pipeline_statuses (pipeline_id, position);

-- ---- row-level security (the pattern above) ------------------------------------------------

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON projects
  USING (id = NULLIF(current_setting('app.project_id', true), '')::uuid)
  WITH CHECK (id = NULLIF(current_setting('app.project_id', true), '')::uuid);

-- outbox (the event log) and dead_letters predate this migration; they get the same policy.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['project_members', 'api_keys', 'idempotency_keys', 'pipelines',
                           'pipeline_statuses', 'outbox', 'dead_letters'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
      USING (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)
      WITH CHECK (project_id = NULLIF(current_setting('app.project_id', true), '')::uuid)$p$, t);
  END LOOP;
END $$;

-- Credentials have no business inside a tenant transaction: the application role cannot read
-- login tokens or the login throttle at all (they are used only by the global auth lookups).
REVOKE ALL ON auth_tokens, login_attempts FROM ventros_app;
