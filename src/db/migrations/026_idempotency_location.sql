-- The Location header of a stored idempotent response, so a replay answers as the first request
-- did (POST /messages, /contacts… answer with where the new resource is). Nullable, no default:
-- adding it rewrites nothing.
ALTER TABLE idempotency_keys ADD COLUMN location text;
