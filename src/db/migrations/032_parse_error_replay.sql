-- A parse error can be sent back through the inbound processor (POST /admin/parse-errors/{id}/replay):
-- an ack or reaction parked because its message came later than its retries, or a payload a
-- parser fix now reads. As with dead letters, a replay is recorded, and a second one is asked for.
ALTER TABLE parse_errors ADD COLUMN replayed_at timestamptz;
ALTER TABLE parse_errors ADD COLUMN replay_count integer NOT NULL DEFAULT 0;
