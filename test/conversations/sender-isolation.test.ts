// One project's provider that hangs must not hold every sender: a project has at most half of a
// process's senders out at once (8 of 16), and the other projects' replies still go. Its replies
// past that wait a moment without spending an attempt, and all go once the provider answers.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { fakeClock, rows, startFakeWaha, startWorld, type WahaCall } from './harness.ts';
import { newPhone } from '../support/phones.ts';

const world = await startWorld({ clock: fakeClock() });
const { db, tenant } = world;


describe('replies of a project whose provider hangs', () => {
  it("hold half of the senders at most; another project's reply goes meanwhile", async () => {
    // Project A's WAHA holds every send until released.
    const stuck = await startFakeWaha();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let hanging = 0;
    let peak = 0;
    stuck.respond(async (call: WahaCall) => {
      if (!call.path.startsWith('/api/send')) return undefined;
      peak = Math.max(peak, ++hanging);
      await released;
      hanging--;
      return undefined;
    });
    const a = await world.createChannel(stuck.url);
    const other = await world.register();
    const fine = await startFakeWaha();
    const b = await world.createChannel(fine.url, {}, other);

    try {
      // 20 conversations of A, more than the senders (16).
      const queued: string[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await tenant.api('POST', '/messages', { channel_id: a.id, type: 'text', phone: `+${newPhone()}`, text: `Oi ${i}` });
        expect(r.status).toBe(202);
        queued.push(r.json.id);
      }
      await waitFor(() => hanging >= 8, "eight of A's replies out at WAHA");

      const r = await other.api('POST', '/messages', { channel_id: b.id, type: 'text', phone: `+${newPhone()}`, text: 'Olá' });
      expect(r.status).toBe(202);
      // Long before A's sends time out (15 s each): a sender was free for it.
      const [sent] = await waitFor(async () => {
        const m = await rows(db, `SELECT status FROM messages WHERE id = $1 AND status <> 'queued'`, [r.json.id]);
        return m.length ? m : undefined;
      }, "B's reply sent", 10_000);
      expect(sent.status).toBe('sent');
      expect(peak).toBe(8);
      // A's others wait, no attempt spent on them.
      const waiting = await rows(db, `SELECT send_attempts FROM messages WHERE id = ANY($1::uuid[]) AND status = 'queued'`, [queued]);
      expect(waiting).toHaveLength(20);
      expect(waiting.reduce((n, m) => n + m.send_attempts, 0)).toBe(8);

      release();
      await waitFor(async () => (await rows(db, `SELECT 1 FROM messages WHERE id = ANY($1::uuid[]) AND status = 'sent'`, [queued])).length === 20, "all of A's replies sent", 30_000);
      const all = await rows(db, `SELECT send_attempts FROM messages WHERE id = ANY($1::uuid[])`, [queued]);
      expect(all.every((m) => m.send_attempts === 1)).toBe(true);
      expect(peak).toBe(8);
    } finally {
      release();
    }
  }, 60_000);
});
