// Direct SQL seeding of channels → contacts → sessions → messages for the read API tests, so they
// do not depend on the inbound pipeline. Runs as the connecting role (outside any tenant
// transaction), the way a migration or an operator would write.
import type { Database } from '../../src/db/database.ts';
import { uuidv7 } from '../../src/domain/ids.ts';

export type Seeded = { id: string };

export async function seedChannel(db: Database, projectId: string, name = 'main'): Promise<string> {
  const id = uuidv7();
  await db.query(
    `INSERT INTO channels (id, project_id, name, type, secrets, webhook_token) VALUES ($1, $2, $3, 'waha', 'x', $4)`,
    [id, projectId, name, `tok_${id}`],
  );
  return id;
}

export async function seedContact(
  db: Database,
  projectId: string,
  c: { phone?: string | null; name?: string | null; nameSource?: 'push' | 'user' | null; tags?: string[]; createdAt?: string } = {},
): Promise<string> {
  const id = uuidv7();
  const phone = c.phone === undefined ? `+55119${Math.floor(10_000_000 + Math.random() * 89_999_999)}` : c.phone;
  await db.query(
    `INSERT INTO contacts (id, project_id, name, name_source, phone, wa_id, tags, source, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7::text[], 'whatsapp', coalesce($8::timestamptz, now()), coalesce($8::timestamptz, now()))`,
    [id, projectId, c.name ?? null, c.nameSource ?? (c.name ? 'push' : null), phone, phone?.slice(1) ?? null, c.tags ?? [], c.createdAt ?? null],
  );
  return id;
}

export async function seedSession(
  db: Database,
  s: {
    projectId: string;
    contactId: string;
    channelId: string;
    startedAt: string;
    lastActivityAt?: string;
    endedAt?: string | null;
    endReason?: string | null;
    counts?: { total: number; fromContact: number; fromAgent: number };
    firstResponseSeconds?: number | null;
  },
): Promise<string> {
  const id = uuidv7();
  const ended = s.endedAt ?? null;
  await db.query(
    `INSERT INTO sessions (id, project_id, contact_id, channel_id, status, started_at, last_activity_at, ended_at, end_reason,
       timeout_minutes, message_count, messages_from_contact, messages_from_agent, first_response_seconds)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 30, $10, $11, $12, $13)`,
    [
      id, s.projectId, s.contactId, s.channelId, ended ? 'ended' : 'active', s.startedAt, s.lastActivityAt ?? s.startedAt, ended,
      ended ? (s.endReason ?? 'inactivity_timeout') : null, s.counts?.total ?? 0, s.counts?.fromContact ?? 0, s.counts?.fromAgent ?? 0,
      s.firstResponseSeconds ?? null,
    ],
  );
  return id;
}

export type SeedMessage = {
  projectId: string;
  contactId: string;
  channelId: string;
  sessionId?: string | null;
  timestamp: string;
  fromMe?: boolean;
  type?: string;
  text?: string | null;
  media?: Record<string, unknown> | null;
  location?: Record<string, unknown> | null;
  contactCard?: Record<string, unknown> | null;
  status?: string;
  replyTo?: string | null;
  metadata?: Record<string, unknown>;
};

export async function seedMessage(db: Database, m: SeedMessage): Promise<string> {
  const id = uuidv7();
  const fromMe = m.fromMe ?? false;
  await db.query(
    `INSERT INTO messages (id, project_id, channel_id, contact_id, session_id, direction, from_me, type, text, media, location,
       contact_card, external_id, status, sent_at, "timestamp", reply_to_external_id, metadata)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12::jsonb, $13, $14, $15, $16, $17, $18::jsonb)`,
    [
      id, m.projectId, m.channelId, m.contactId, m.sessionId ?? null, fromMe ? 'outbound' : 'inbound', fromMe, m.type ?? 'text',
      m.text === undefined ? `hello ${id.slice(-4)}` : m.text, json(m.media), json(m.location), json(m.contactCard), `wamid.${id}`,
      m.status ?? (fromMe ? 'sent' : 'received'), fromMe ? m.timestamp : null, m.timestamp, m.replyTo ?? null, JSON.stringify(m.metadata ?? {}),
    ],
  );
  return id;
}

const json = (v: unknown) => (v === undefined || v === null ? null : JSON.stringify(v));

/** ISO time `minutes` after a fixed base, so orderings in tests are explicit. */
export const at = (minutes: number, base = '2025-03-01T12:00:00.000Z') => new Date(Date.parse(base) + minutes * 60_000).toISOString();
