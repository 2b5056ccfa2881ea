-- Finished deliveries are pruned after WEBHOOK_RETENTION_DAYS (timers/housekeeping.ts). This index
-- lets each pass find the oldest ones directly, instead of scanning every delivery kept; it holds
-- only finished rows, so it costs one entry when a delivery finishes and nothing while it is in flight.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at) WHERE status IN ('succeeded', 'dead');
