// `ventros simulate waha`: posts a steady stream of realistic webhooks to a listening server and
// reports what it saw; everything it reports as accepted ends up stored.
import { describe, expect, it, vi } from 'vitest';
import { newWebhookToken } from '../../src/services/channels.service.ts';
import { runSimulate } from '../../src/inbound/simulate.ts';
import { waitFor } from '../support/env.ts';
import { count, startInbound } from './harness.ts';

describe('ventros simulate waha', () => {
  it('posts mixed webhooks at the given rate and prints accepted/failed counts and latency percentiles', async () => {
    const t = await startInbound({ listen: true });
    const ch = await t.createChannel();
    const lines: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    let code: number;
    try {
      code = await runSimulate(['waha', '--channel', ch.id, '--token', ch.token, '--rate', '40', '--duration', '2', '--url', t.running.url!, '--messages-only', '--contacts', '7']);
    } finally {
      log.mockRestore();
    }
    expect(code).toBe(0);
    const out = lines.join('\n');
    expect(out).toMatch(/sent 80 in \d+\.\d s/);
    expect(out).toMatch(/accepted 80, failed 0/);
    expect(out).toMatch(/latency ms: p50 \d+\.\d {2}p90 \d+\.\d {2}p99 \d+\.\d {2}max \d+\.\d/);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 80, '80 messages stored', 60_000);
    const types = (await t.db.query('SELECT DISTINCT type FROM messages WHERE channel_id = $1', [ch.id])).rows.map((r) => r.type);
    expect(types.length).toBeGreaterThan(2);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1', [t.projectId])).toBe(7);
    expect(await count(t.db, 'SELECT 1 FROM parse_errors')).toBe(0);
  }, 120_000);

  it('never gives a channel a webhook token that starts with `-`, which a command line takes for an option', () => {
    // The first test above failed when the channel's random token began with `-` (1 in 64).
    for (let i = 0; i < 5000; i++) expect(newWebhookToken()).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{31}$/);
  });

  it('fails with a usage message on bad arguments', async () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      expect(await runSimulate(['waha', '--rate', '10'])).toBe(2);
      expect(await runSimulate(['telegram'])).toBe(2);
      // A value that starts with `-` must be given as --token=<value>; said, not thrown.
      expect(await runSimulate(['waha', '--channel', 'c', '--token', '-abc'])).toBe(2);
      expect(await runSimulate(['waha', '--bogus'])).toBe(2);
    } finally {
      err.mockRestore();
    }
  });
});
