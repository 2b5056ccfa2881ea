-- dead_letters only grew (rows carry bodies of up to 1 MiB), and every stats call counted the rows
-- not replayed yet through (queue, created_at), visiting each queue's whole history. Housekeeping
-- now deletes dead letters replayed more than EVENT_RETENTION_DAYS ago (never one not replayed),
-- and the counts read partial indexes that hold only the rows not replayed:
--   per queue (the brokers' stats, the `dead_letters` gauge) and per project and queue (what
--   /admin/queues shows a project admin).
-- Plain CREATE INDEX: migrations run in a transaction, where CONCURRENTLY cannot; a new dead letter
-- waits for the build.
CREATE INDEX dead_letters_not_replayed ON dead_letters (queue) WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_project_not_replayed ON dead_letters (project_id, queue) WHERE replayed_at IS NULL;
-- What housekeeping deletes, oldest replay first.
CREATE INDEX dead_letters_replayed_at ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
