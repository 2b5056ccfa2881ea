// The inbound processor in a process of its own, for the kill -9 test: it consumes the raw queue
// as production does and prints `ready` once consuming, until the test SIGKILLs it.
// Usage: node --import tsx test/inbound/child-processor.ts
// Env: CHILD_DATABASE_URL (the test database), AMQP_URL, CHILD_NAMESPACE (RabbitMQ names), SECRET_KEY.
import { connectRabbitBroker } from '../../src/broker/rabbitmq.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { startInboundProcessor } from '../../src/inbound/processor.ts';
import { silentLogger } from '../../src/observability/logger.ts';

const url = process.env.CHILD_DATABASE_URL;
if (!url || !process.env.AMQP_URL || !process.env.SECRET_KEY) {
  console.error('child-processor needs CHILD_DATABASE_URL, AMQP_URL and SECRET_KEY');
  process.exit(2);
}
// If the test process goes away without killing us, do not linger.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(3), 180_000).unref();

const db = connectPostgres({ url, max: 10, applicationName: 'ventros-test-processor' });
const broker = await connectRabbitBroker({ url: process.env.AMQP_URL, db, retryDelaysMs: [100, 300, 1000], namespace: process.env.CHILD_NAMESPACE ?? '' });
const channels = makeChannelDirectory({ db, secretKey: process.env.SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
await startInboundProcessor({ db, broker, logger: silentLogger, channels });
process.stdout.write('ready\n');
