-- A subscription pointed at another URL, or turned back on by hand, is a fresh start for its
-- endpoint: every dispatcher forgets what its circuit breaker had learnt of the old one (the
-- breaker's state lives in each process). Only while it is active: a disabled one's deliveries
-- must not be claimed (that ends them). Payload: the subscription id.
CREATE FUNCTION webhook_endpoint_changed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ventros_webhook_endpoints', NEW.id::text);
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_endpoint_changed
  AFTER UPDATE OF url, active ON webhook_subscriptions
  FOR EACH ROW WHEN (NEW.active AND (OLD.url IS DISTINCT FROM NEW.url OR NOT OLD.active))
  EXECUTE FUNCTION webhook_endpoint_changed_notify();
