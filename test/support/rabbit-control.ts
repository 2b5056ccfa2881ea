// Stops and starts the real RabbitMQ application, for `*.disruptive.test.ts` files only: vitest
// runs those last and one at a time (vitest.config.ts), because every other test file uses the
// same server. Prefer the TCP proxy (tcp-proxy.ts) whenever a broken connection is enough.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import amqp from 'amqplib';

const run = promisify(execFile);

/** `rabbitmqctl` on PATH unless RABBITMQCTL names another one. */
const ctl = (): string => process.env.RABBITMQCTL ?? 'rabbitmqctl';

function amqpUrl(): string {
  const url = process.env.AMQP_URL;
  if (!url) throw new Error('AMQP_URL is not set: disruptive tests need the services target');
  return url;
}

/** Stops the RabbitMQ application (the Erlang node stays up), then waits until AMQP is refused. */
export async function stopRabbit(timeoutMs = 60_000): Promise<void> {
  await run(ctl(), ['-q', 'stop_app'], { timeout: timeoutMs });
  await until(async () => !(await acceptsAmqp()), 'RabbitMQ to refuse connections', timeoutMs);
}

/** Starts the RabbitMQ application and waits until it accepts AMQP connections again. */
export async function startRabbit(timeoutMs = 120_000): Promise<void> {
  await run(ctl(), ['-q', 'start_app'], { timeout: timeoutMs });
  await until(acceptsAmqp, 'RabbitMQ to accept AMQP connections', timeoutMs);
}

/** A full AMQP handshake, not just an open port: the listener opens before the vhosts are ready. */
export async function acceptsAmqp(): Promise<boolean> {
  try {
    const conn = await amqp.connect(amqpUrl(), { timeout: 2000 });
    conn.on('error', () => {});
    await conn.close().catch(() => {});
    return true;
  } catch {
    return false;
  }
}

async function until(probe: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
