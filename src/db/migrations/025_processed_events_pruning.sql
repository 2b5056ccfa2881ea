-- processed_events (each consumer's marker of an event it applied) only grew: one row per event and
-- consumer, for ever. Housekeeping now deletes markers older than EVENT_RETENTION_DAYS, the age at
-- which the events themselves are deleted from the outbox; this index finds them.
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
