// A webhook dispatcher in its own process, for the "dispatcher killed mid-delivery" test: it runs
// only the dispatcher part of the webhook worker on the test's database and RabbitMQ namespace,
// prints `ready`, and is SIGKILLed by the test while an attempt is out.
// Usage: node --import tsx test/webhooks/child-dispatcher.ts
// Env: CHILD_DATABASE_URL, CHILD_NAMESPACE, CHILD_SECRET_KEY, AMQP_URL, CHILD_LEASE_MARGIN_MS.
import { connectRabbitBroker } from '../../src/broker/rabbitmq.ts';
import { loadConfig } from '../../src/config.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startWebhookWorker } from '../../src/webhooks/webhook-worker.ts';

const dbUrl = process.env.CHILD_DATABASE_URL;
const secretKey = process.env.CHILD_SECRET_KEY;
if (!dbUrl || !secretKey || !process.env.AMQP_URL) {
  console.error('child-dispatcher.ts needs CHILD_DATABASE_URL, CHILD_SECRET_KEY and AMQP_URL');
  process.exit(2);
}
// If the test process goes away without killing us, do not linger.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(3), 120_000).unref();

const db = connectPostgres({ url: dbUrl, max: 4, applicationName: 'ventros-test-child-dispatcher' });
const broker = await connectRabbitBroker({ url: process.env.AMQP_URL, db, retryDelaysMs: [50, 100], namespace: process.env.CHILD_NAMESPACE ?? '' });
const config = loadConfig({ LOG_LEVEL: 'silent', WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_RETRY_SCHEDULE: '200ms,400ms', WEBHOOK_CONCURRENCY: '4' });
await startWebhookWorker({
  db,
  broker,
  config,
  secretKey,
  logger: silentLogger,
  parts: { dispatcher: true, fanout: false, scheduler: false },
  leaseMarginMs: Number(process.env.CHILD_LEASE_MARGIN_MS ?? 300),
});
process.stdout.write('ready\n');
