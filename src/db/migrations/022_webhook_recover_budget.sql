-- `recover` re-sends the dead deliveries of a subscription. It used to leave each with the attempts
-- it had spent, so the first failure after it (a 429 or a 503 from an endpoint just back, with a
-- Retry-After) found no attempt left and the delivery was dead again at once. A recovered delivery
-- now gets the subscription's whole retry schedule again: its attempts keep counting (they number
-- its rows in webhook_attempts), and the schedule counts from the attempts it had when recovered.
ALTER TABLE webhook_deliveries ADD COLUMN attempts_before_recover integer NOT NULL DEFAULT 0;
