-- A subscription turned off (by hand, by its endpoint's 410, after failing for days) or deleted
-- (its project's deletion too): every dispatcher forgets its circuit, so that
-- webhook_circuit_open{subscription} does not stay 1 for an endpoint nothing is sent to any more.
-- Payload: 'gone:' and the subscription id (016's is the id alone; a dispatcher of an earlier
-- version ignores this one).
CREATE FUNCTION webhook_endpoint_gone_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('ventros_webhook_endpoints', 'gone:' || OLD.id::text);
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_endpoint_turned_off
  AFTER UPDATE OF active ON webhook_subscriptions
  FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
  EXECUTE FUNCTION webhook_endpoint_gone_notify();
CREATE TRIGGER webhook_endpoint_deleted
  AFTER DELETE ON webhook_subscriptions
  FOR EACH ROW EXECUTE FUNCTION webhook_endpoint_gone_notify();
