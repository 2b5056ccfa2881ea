-- When the Postgres-backed queue first handed a message back because its handler could not reach
-- the database (no attempt spent). Such rounds go on for at most an hour from here, kept through
-- the message's retries; after that its failures count again, as on RabbitMQ (x-outage-since): a
-- message whose own query brings the server down looks like an outage too.
ALTER TABLE queue_messages ADD COLUMN outage_since timestamptz;
