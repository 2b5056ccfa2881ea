-- Housekeeping deletes parse errors EVENT_RETENTION_DAYS after they were parked, oldest first,
-- in chunks: this index finds them without reading the whole table each time.
CREATE INDEX IF NOT EXISTS parse_errors_created ON parse_errors (created_at);
