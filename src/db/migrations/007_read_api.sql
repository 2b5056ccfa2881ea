-- Indexes for the read API's session lists (005 covers contacts, messages and the unfiltered list).

-- The inbox view, GET /sessions?status=active: active sessions are a small, hot slice of a table
-- that grows forever, so they get an index of their own in the list order.
CREATE INDEX IF NOT EXISTS sessions_active_list ON sessions (project_id, started_at DESC, id DESC) WHERE status = 'active';

-- GET /sessions?channel_id=…: one channel's conversations in the list order.
CREATE INDEX IF NOT EXISTS sessions_channel_list ON sessions (channel_id, started_at DESC, id DESC);
