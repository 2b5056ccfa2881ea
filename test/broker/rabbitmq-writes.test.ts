// The RabbitMQ connection coalesces the frames written in one event-loop turn into one socket
// write. This test pins that to amqplib's internals: if an upgrade changes them, it fails here
// instead of the optimisation silently switching off.
import amqp from 'amqplib';
import { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { coalesceWrites } from '../../src/broker/rabbitmq-connection.ts';
import { onCleanup, onServices, uniqueName } from '../support/env.ts';

async function socketWritesFor(coalesce: boolean, messages: number): Promise<number> {
  const conn = await amqp.connect(process.env.AMQP_URL!);
  onCleanup(() => conn.close().catch(() => {}));
  if (coalesce) expect(coalesceWrites(conn)).toBe(true);
  const ch = await conn.createConfirmChannel();
  const queue = uniqueName('writes');
  await ch.assertQueue(queue, { exclusive: true });
  const socket = (conn as unknown as { connection: { stream: Socket } }).connection.stream;
  const internals = socket as unknown as { _write: (...a: unknown[]) => unknown; _writev: (...a: unknown[]) => unknown };
  let writes = 0;
  const w = internals._write;
  const wv = internals._writev;
  internals._write = function (...a: unknown[]) {
    writes++;
    return w.apply(this, a);
  };
  internals._writev = function (...a: unknown[]) {
    writes++;
    return wv.apply(this, a);
  };
  const confirms = Array.from({ length: messages }, (_, i) => new Promise<void>((resolve, reject) => ch.publish('', queue, Buffer.from(`m${i}`), {}, (err) => (err ? reject(err) : resolve()))));
  await Promise.all(confirms);
  const got = await ch.checkQueue(queue);
  expect(got.messageCount).toBe(messages);
  return writes;
}

describe.runIf(onServices)('RabbitMQ socket writes', () => {
  it('sends the frames of one event-loop turn in a few socket writes instead of one per message', async () => {
    const plain = await socketWritesFor(false, 200);
    const coalesced = await socketWritesFor(true, 200);
    expect(plain).toBeGreaterThanOrEqual(200);
    expect(coalesced).toBeLessThanOrEqual(10);
  });
});
