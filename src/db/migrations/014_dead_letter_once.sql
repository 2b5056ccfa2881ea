-- The death of one send is recorded once. The RabbitMQ consumer writes the dead letter, then acks; when the
-- ack is lost (the connection drops in between) the message comes back, fails its last attempt
-- again and was written a second time, and replaying both sent it twice. `death_key` names one
-- death: a hash of the message id and of the send it came in (RabbitMQ gives every send a fresh
-- x-send-id header, kept through its retries). The same death written twice is then one row, while
-- the same message sent again (a replay, a delivery due again) and dead again gets a row of its own.
-- Rows written before this migration, and messages without an id or a send id (the Postgres broker
-- records a death in the transaction that removes the message), have no key and are never merged.
ALTER TABLE dead_letters ADD COLUMN death_key text;
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (queue, death_key) WHERE death_key IS NOT NULL;
