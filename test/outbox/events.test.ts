import { describe, expect, it } from 'vitest';
import { EVENT_CATALOGUE, EVENT_TYPES, isEventType, newEvent } from '../../src/domain/events.ts';
import { isUuid } from '../../src/domain/ids.ts';
import { MalformedEventError, eventMessageBody, parseEventMessage } from '../../src/outbox/idempotent.ts';
import { contactCreated } from './helpers.ts';

// contract.md §3, verbatim: the catalogue may grow, never lose one of these.
const CONTRACT_EVENTS = [
  'contact.created', 'contact.updated', 'contact.deleted', 'contact.status_changed',
  'session.started', 'session.ended',
  'message.received', 'message.sent', 'message.delivered', 'message.read', 'message.played', 'message.failed',
  'tracking.ad_click', 'channel.status_changed', 'pipeline.created', 'webhook.endpoint_disabled',
  // added since: a contact's reaction, edit or deletion of a message
  'message.reacted', 'message.edited', 'message.revoked',
];

describe('event catalogue', () => {
  it('has every event of the contract plus webhook.test, each named <aggregate>.<past tense> with a description', () => {
    expect(EVENT_TYPES).toEqual(expect.arrayContaining([...CONTRACT_EVENTS, 'webhook.test']));
    for (const type of EVENT_TYPES) {
      const spec = EVENT_CATALOGUE[type];
      expect(type).toMatch(/^[a-z]+\.[a-z_]+$/);
      expect(type.split('.')[0]).toBe(spec.aggregate);
      expect(spec.description.length).toBeGreaterThan(10);
      expect(spec.description).not.toContain('\n');
      expect(spec.version).toBeGreaterThanOrEqual(1);
    }
    expect(isEventType('message.received')).toBe(true);
    expect(isEventType('message.recieved')).toBe(false);
    expect(isEventType('toString')).toBe(false);
  });

  it('builds envelopes with time-ordered v7 ids and the catalogue version and aggregate', () => {
    const a = newEvent('session.ended', {
      projectId: '0190a0a0-0000-7000-8000-000000000001',
      aggregateId: 's1',
      occurredAt: new Date('2024-06-01T12:00:00Z'),
      data: {
        session_id: 's1', contact_id: 'c1', channel_id: 'ch1', reason: 'inactivity_timeout', started_at: '2024-06-01T11:00:00Z', ended_at: '2024-06-01T12:00:00Z',
        message_count: 4, messages_from_contact: 3, messages_from_agent: 1, first_response_seconds: 42, duration_seconds: 3600, customer_wait_seconds: 42, closed_by: null,
      },
    });
    const b = contactCreated('0190a0a0-0000-7000-8000-000000000001');
    expect(a).toMatchObject({ type: 'session.ended', version: 1, aggregate_type: 'session', aggregate_id: 's1', occurred_at: '2024-06-01T12:00:00.000Z' });
    expect(isUuid(a.id) && a.id[14]).toBe('7');
    expect(a.id < b.id).toBe(true);
  });
});

describe('parseEventMessage', () => {
  const e = contactCreated('0190a0a0-0000-7000-8000-000000000001');

  it('returns the envelope the relay published', () => {
    expect(parseEventMessage({ messageId: e.id, body: eventMessageBody(e) })).toEqual(e);
  });

  it('rejects bodies that are not event envelopes, saying why', () => {
    const bad = (body: unknown, messageId = e.id) => () => parseEventMessage({ messageId, body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)) });
    expect(bad('{not json')).toThrow(MalformedEventError);
    expect(bad({ ...e, type: 'contact.exploded' })).toThrow(/not in the catalogue/);
    expect(bad({ ...e, id: 'x' })).toThrow(/id is not a UUID/);
    expect(bad({ ...e, data: null })).toThrow(/data/);
    expect(bad(e, '0190a0a0-0000-7000-8000-000000000009')).toThrow(/message id differs/);
  });
});
