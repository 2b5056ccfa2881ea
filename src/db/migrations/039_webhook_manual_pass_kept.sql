-- A manual retry or a test event goes past an open circuit (it was asked for now). That pass was
-- on its queue message only: put off by the endpoint's or project's cap or by the rate limit, the
-- delivery came back through the scheduler as any other and waited out the cool-down after all.
-- Now the row keeps it until the delivery's next attempt is recorded (or taken back after its
-- lease); the scheduler puts it on the message it sends. Adding a column with a constant default
-- rewrites nothing (PostgreSQL 11+).
ALTER TABLE webhook_deliveries ADD COLUMN manual boolean NOT NULL DEFAULT false;
