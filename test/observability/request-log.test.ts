// At LOG_LEVEL=debug every request is logged with its URL; a WAHA webhook may carry its channel's
// token in the query (`?token=`), and Meta's handshake its verify token: neither may reach the log.
import { describe, expect, it } from 'vitest';
import { allQueues } from '../../src/broker/topology.ts';
import { loadConfig } from '../../src/config.ts';
import { buildApp } from '../../src/http/app.ts';
import { loggableUrl, makeLogger } from '../../src/observability/logger.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup } from '../support/env.ts';

describe('request logs', () => {
  it('replace the secrets of a URL query and keep the rest', () => {
    expect(loggableUrl('/api/v1/webhooks/waha/abc?token=s3cr3t&x=1')).toBe('/api/v1/webhooks/waha/abc?token=[redacted]&x=1');
    expect(loggableUrl('/api/v1/webhooks/whatsapp/abc?hub.mode=subscribe&hub.verify_token=v&hub.challenge=42')).toBe(
      '/api/v1/webhooks/whatsapp/abc?hub.mode=subscribe&hub.verify_token=[redacted]&hub.challenge=42',
    );
    expect(loggableUrl('/api/v1/contacts?search=token')).toBe('/api/v1/contacts?search=token');
  });

  it('never show a webhook token given in the query, at debug level', async () => {
    const lines: string[] = [];
    const logger = makeLogger('debug', {}, { write: (line: string) => void lines.push(line) });
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    await broker.declareQueues(allQueues());
    const app = await buildApp({ config: loadConfig({ LOG_LEVEL: 'debug' }), db, broker, logger, secretKey: 'k'.repeat(64) });
    onCleanup(() => app.close());
    const r = await app.inject({ method: 'POST', url: '/api/v1/webhooks/waha/0193a0a0-0000-7000-8000-000000000000?token=TOKEN-SHOULD-NOT-BE-LOGGED', payload: { event: 'message' } });
    expect(r.statusCode).toBe(404);
    const logged = lines.join('\n');
    expect(logged).toContain('token=[redacted]'); // the request was logged, its URL kept
    expect(logged).not.toContain('TOKEN-SHOULD-NOT-BE-LOGGED');
  });
});
