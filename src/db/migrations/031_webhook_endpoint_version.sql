-- A dispatcher forgets what its circuit breaker learnt of an endpoint when it hears that the
-- endpoint changed (016's notification: another URL, or turned back on by hand). One that could
-- not hear it — its LISTEN connection down — compares this counter, bumped on the same change,
-- with the one it saw when it began to learn. Only that change bumps it: a rename, new headers
-- or a new secret are not another endpoint.
ALTER TABLE webhook_subscriptions ADD COLUMN endpoint_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION webhook_endpoint_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.endpoint_version := OLD.endpoint_version + 1;
  RETURN NEW;
END $$;

CREATE TRIGGER webhook_endpoint_version
  BEFORE UPDATE OF url, active ON webhook_subscriptions
  FOR EACH ROW WHEN (NEW.active AND (OLD.url IS DISTINCT FROM NEW.url OR NOT OLD.active))
  EXECUTE FUNCTION webhook_endpoint_version_bump();
