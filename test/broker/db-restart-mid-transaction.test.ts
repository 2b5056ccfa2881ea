// A handler whose database goes away must see a marked error, so its message goes round without
// spending an attempt (architecture.md §6, "database down"). Here the server ends the handler's
// transaction between two of its statements (the FATAL 57P01 a fast shutdown, a restart or a
// failover sends every session), while no query is running. Before, the checked-out connection
// emitted 'error' with nobody listening and the whole worker process exited, with every message
// it held (RabbitMQ: one more on each one's delivery count; Postgres broker: leases run out).
//
// Services only (PGlite has no connections). The consumer runs in a child process
// (child-tx-consumer.ts), because the failure this guards against kills it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeTestBroker, type BrokerKind } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
describe.runIf(onServices)('the database ends a transaction between its statements', () => {
  it.each<BrokerKind>(['rabbitmq', 'postgres'])('on the %s broker the handler gets a marked error, the message goes round unspent, the process lives', async (kind) => {
    const { db, url } = await makeTestDb();
    const b = await makeTestBroker(kind, db);
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);

    const child = spawn(process.execPath, ['--import', 'tsx', 'test/broker/child-tx-consumer.ts', kind, q], {
      cwd: ROOT,
      env: { ...process.env, CHILD_DATABASE_URL: url, CHILD_NAMESPACE: b.namespace },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let exit: { code: number | null; signal: string | null } | undefined;
    const exited = once(child, 'exit').then(([code, signal]) => void (exit = { code, signal }));
    onCleanup(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => void (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => void (err += d.toString()));

    await waitFor(() => out.includes('ready') || exit, 'the child consumer to start', 30_000);
    expect(exit).toBeUndefined();
    await b.send(q, [{ messageId: uuidv7(), body: Buffer.from('{}') }]);

    await waitFor(() => out.includes('done ') || exit, 'the message handled, or the child gone', 30_000);
    const crash = err.split('\n').filter((l) => /Error|error|FATAL|terminat/.test(l)).slice(0, 3).join(' | ');
    expect(exit, `the consumer process exited; stdout: ${JSON.stringify(out)}; stderr: ${crash}`).toBeUndefined();
    expect(out).toContain('failed attempt=1 marked=true');
    expect(out).toContain('done attempt=1');
  }, 90_000);
});
