import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type InboundStatus, type MessageStatus, ParseError, isForward } from '../../src/domain/inbound.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { mutateFixtures } from '../support/mutate-fixtures.ts';

const DIR = new URL('../fixtures/waha/', import.meta.url);
const load = (name: string): any => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8'));
const at = (seconds: number) => new Date(seconds * 1000);
const recipient = { phone: '+5511900000001', waId: '5511900000001' };

describe('WAHA acks', () => {
  it('message.ack → status of our message, recipient is the chat (not us in `to`), time from the envelope', () => {
    expect(parseWahaEvent(load('ack-read'))).toEqual([{
      kind: 'status', provider: 'waha', event: 'message.ack',
      externalId: 'true_5511900000001@c.us_3EB0DEV00000000OUT01', messageKey: '3EB0DEV00000000OUT01',
      status: 'read', fromMe: true, timestamp: new Date(1764461280000), recipient,
    }]);
  });

  it.each([
    ['ack-server', 'sent'], ['ack-delivered', 'delivered'], ['ack-read', 'read'], ['ack-error', 'failed'],
  ])('%s → %s', (name, status) => {
    expect(parseWahaEvent(load(name))[0]).toMatchObject({ kind: 'status', status, recipient });
  });

  it('maps every ack code, and ackName when the code is missing', () => {
    const codes: Array<[number, MessageStatus]> = [[-1, 'failed'], [0, 'pending'], [1, 'sent'], [2, 'delivered'], [3, 'read'], [4, 'played']];
    for (const [ack, status] of codes) {
      const body = load('ack-read');
      body.payload.ack = ack;
      expect((parseWahaEvent(body)[0] as InboundStatus).status).toBe(status);
    }
    const body = load('ack-read');
    delete body.payload.ack;
    body.payload.ackName = 'PLAYED';
    expect((parseWahaEvent(body)[0] as InboundStatus).status).toBe('played');
  });

  it('an ack code we do not know is counted, not guessed', () => {
    const body = load('ack-read');
    body.payload.ack = 9;
    body.payload.ackName = 'SOMETHING';
    expect(parseWahaEvent(body)).toEqual([{ kind: 'ignored', provider: 'waha', event: 'message.ack', reason: 'unknown_status', detail: '9' }]);
  });

  it('an ack in a group refers to a message we never stored and is skipped', () => {
    const body = load('ack-read');
    Object.assign(body.payload, { from: '120363000000000001@g.us', participant: '5511900000004@c.us' });
    expect(parseWahaEvent(body)[0]).toMatchObject({ kind: 'ignored', reason: 'group' });
  });

  it('ack 2 then a late ack 1: the second is not a forward move, so status never goes back', () => {
    const delivered = parseWahaEvent(load('ack-delivered'))[0] as InboundStatus;
    const server = parseWahaEvent(load('ack-server'))[0] as InboundStatus;
    expect(delivered.messageKey).toBe(server.messageKey);
    expect(isForward(undefined, delivered.status)).toBe(true);
    expect(isForward(delivered.status, server.status)).toBe(false);
    expect(isForward(delivered.status, 'read')).toBe(true);
  });

  it('an ack can arrive before its message: both name the same message key', () => {
    const ack = parseWahaEvent(load('ack-read'))[0] as InboundStatus;
    const msg = parseWahaEvent(load('gows-from-me-phone'))[0];
    expect(msg).toMatchObject({ kind: 'message', messageKey: ack.messageKey });
  });
});

describe('status order', () => {
  it.each<[MessageStatus | undefined, MessageStatus, boolean]>([
    [undefined, 'sent', true], [undefined, 'failed', true],
    ['pending', 'sent', true], ['sent', 'delivered', true], ['delivered', 'read', true], ['read', 'played', true],
    ['sent', 'read', true], // delivered may be skipped when read at once
    ['read', 'delivered', false], ['delivered', 'sent', false], ['sent', 'sent', false], ['played', 'read', false],
    ['pending', 'failed', true], ['sent', 'failed', true], ['delivered', 'failed', true],
    ['read', 'failed', false], ['played', 'failed', false],
    ['failed', 'sent', false], ['failed', 'read', false], ['failed', 'failed', false],
  ])('%s → %s: %s', (from, to, expected) => {
    expect(isForward(from, to)).toBe(expected);
  });
});

describe('WAHA reactions, revokes and edits', () => {
  it('message.reaction adds an emoji to the target message', () => {
    expect(parseWahaEvent(load('webjs-reaction-add'))).toEqual([{
      kind: 'reaction', provider: 'waha', event: 'message.reaction',
      externalId: 'false_5511900000005@c.us_AAAADEV0000000REACT1',
      targetExternalId: 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', targetKey: '3EB0DEV0000000WEBJS02',
      emoji: '👍', fromMe: false, contact: { phone: '+5511900000005', waId: '5511900000005' },
      timestamp: new Date(1764461659853),
    }]);
  });

  it('an empty reaction text removes the reaction', () => {
    expect(parseWahaEvent(load('webjs-reaction-remove'))[0]).toMatchObject({ kind: 'reaction', emoji: '', targetKey: '3EB0DEV0000000WEBJS02' });
  });

  it('a NOWEB reaction delivered as a message becomes a reaction, not a message', () => {
    const body = load('noweb-text');
    body.payload.body = '🔥';
    body.payload._data.message = { reactionMessage: { key: { remoteJid: '5511900000006@s.whatsapp.net', fromMe: true, id: '3EB0DEV00000000OUT09' }, text: '🔥' } };
    expect(parseWahaEvent(body)[0]).toMatchObject({ kind: 'reaction', emoji: '🔥', targetExternalId: '3EB0DEV00000000OUT09', targetKey: '3EB0DEV00000000OUT09' });
  });

  it("a reaction in a group or on a Status post is skipped, ours too, whichever side names the chat", () => {
    const ours = (from: string | null, to: string | null) => {
      const body = load('webjs-reaction-add');
      Object.assign(body.payload, { from, to, fromMe: true, participant: null });
      return parseWahaEvent(body)[0];
    };
    // GOWS and NOWEB: the chat in `from`, `to` null outside groups and us inside them; WEBJS: us in `from`, the chat in `to`.
    expect(ours('120363000000000001@g.us', '5511900000000@c.us')).toMatchObject({ kind: 'ignored', reason: 'group', detail: '120363000000000001@g.us' });
    expect(ours('120363000000000001@g.us', null)).toMatchObject({ kind: 'ignored', reason: 'group' });
    expect(ours('5511900000000@c.us', '120363000000000001@g.us')).toMatchObject({ kind: 'ignored', reason: 'group' });
    expect(ours('status@broadcast', null)).toMatchObject({ kind: 'ignored', reason: 'status' });
    expect(ours('120363000000000009@newsletter', null)).toMatchObject({ kind: 'ignored', reason: 'newsletter' });
    const theirs = load('webjs-reaction-add');
    Object.assign(theirs.payload, { from: '120363000000000001@g.us', participant: '5511900000005@c.us' });
    expect(parseWahaEvent(theirs)[0]).toMatchObject({ kind: 'ignored', reason: 'group' });
    // A one-to-one reaction of ours is still recorded.
    expect(ours('5511900000005@c.us', null)).toMatchObject({ kind: 'reaction', fromMe: true, emoji: '👍' });
  });

  it('a NOWEB protocol message (a deletion, an edit, a sync) delivered as a message is skipped, not stored as an unknown message', () => {
    const variants: Array<[string, Record<string, unknown>]> = [
      ['protocolMessage', { protocolMessage: { key: { remoteJid: '5511900000006@s.whatsapp.net', fromMe: false, id: '3EB0DEV000000NOWEB01' }, type: 'REVOKE' } }],
      ['editedMessage', { editedMessage: { message: { protocolMessage: { key: { id: '3EB0DEV000000NOWEB01' }, type: 'MESSAGE_EDIT', editedMessage: { conversation: 'Preciso trocar dois produtos' } } } } }],
      ['protocolMessage', { messageContextInfo: {}, protocolMessage: { type: 'HISTORY_SYNC_NOTIFICATION' } }],
    ];
    for (const [key, message] of variants) {
      const body = load('noweb-text');
      body.event = 'message.any';
      body.payload.body = '';
      body.payload._data.message = message;
      expect(parseWahaEvent(body), key).toEqual([{ kind: 'ignored', provider: 'waha', event: 'message.any', reason: 'protocol_message', detail: key }]);
    }
  });

  it('message.revoked names the deleted message by its bare id', () => {
    expect(parseWahaEvent(load('gows-revoked'))).toEqual([{
      kind: 'revoke', provider: 'waha', event: 'message.revoked',
      externalId: 'false_5511900000001@c.us_3EB0DEV00000000REV01',
      targetExternalId: '3EB0DEV00000000IMG01', targetKey: '3EB0DEV00000000IMG01',
      fromMe: false, contact: recipient, timestamp: at(1764461679),
    }]);
  });

  it('WEBJS revokes without revokedMessageId target after.id', () => {
    const body = load('gows-revoked');
    delete body.payload.revokedMessageId;
    expect(parseWahaEvent(body)[0]).toMatchObject({ kind: 'revoke', targetKey: '3EB0DEV00000000REV01' });
  });

  it('message.edited carries the new text for the edited message', () => {
    expect(parseWahaEvent(load('gows-edited'))).toEqual([{
      kind: 'edit', provider: 'waha', event: 'message.edited',
      externalId: 'false_5511900000001@c.us_3EB0DEV00000000EDT01',
      targetExternalId: '3EB0DEV000000000TEXT01', targetKey: '3EB0DEV000000000TEXT01',
      text: 'Oi! Vocês abrem no sábado e no domingo?', fromMe: false, contact: recipient, timestamp: at(1764461699),
    }]);
  });
});

describe('WAHA revokes and edits that name no chat, or one we cannot read', () => {
  it('naming none, are applied all the same: the target message is found by its key alone', () => {
    const revoke = load('gows-revoked');
    const after = revoke.payload.after;
    delete after.from;
    delete after.to;
    delete after._data;
    expect(parseWahaEvent(revoke)).toEqual([{
      kind: 'revoke', provider: 'waha', event: 'message.revoked', externalId: after.id,
      targetExternalId: '3EB0DEV00000000IMG01', targetKey: '3EB0DEV00000000IMG01', fromMe: false, contact: {}, timestamp: at(1764461679),
    }]);
    const edit = load('gows-edited');
    delete edit.payload.from;
    delete edit.payload.to;
    delete edit.payload._data;
    expect(parseWahaEvent(edit)).toEqual([expect.objectContaining({ kind: 'edit', targetKey: '3EB0DEV000000000TEXT01', text: 'Oi! Vocês abrem no sábado e no domingo?', contact: {} })]);
  });

  it('naming a chat on a server we do not know, are skipped as its messages were (their target was never stored)', () => {
    const edit = load('gows-edited');
    edit.payload.from = 'someone@unknown.server';
    edit.payload._data.Info.Chat = 'someone@unknown.server';
    edit.payload._data.Info.Sender = 'someone@unknown.server';
    expect(parseWahaEvent(edit)).toEqual([expect.objectContaining({ kind: 'ignored', reason: 'unknown_address' })]);
  });

  it('one in a group, on a Status post, a newsletter or a broadcast list is still skipped', () => {
    for (const [chat, reason] of [['120363000000000001@g.us', 'group'], ['status@broadcast', 'status'], ['120363000000000099@newsletter', 'newsletter'], ['1764461000@broadcast', 'broadcast']]) {
      const revoke = load('gows-revoked');
      revoke.payload.after.from = chat;
      delete revoke.payload.after._data;
      expect(parseWahaEvent(revoke)[0], chat).toMatchObject({ kind: 'ignored', reason });
      // Also when the side that names the chat is not the one read for the contact.
      const edit = load('gows-edited');
      Object.assign(edit.payload, { fromMe: true, from: chat, to: 'someone@unknown.server' });
      delete edit.payload._data;
      expect(parseWahaEvent(edit)[0], chat).toMatchObject({ kind: 'ignored', reason });
    }
  });
});

describe('WAHA edits without their text', () => {
  it('an edit without a body is a parse error, not an edit to an empty text', () => {
    const body = load('gows-edited');
    delete body.payload.body;
    expect(() => parseWahaEvent(body)).toThrow(ParseError);
    expect(() => parseWahaEvent(body)).toThrow('payload.body is missing');
  });
});

describe('WAHA session status', () => {
  it.each([
    ['session-status-working', 'WORKING', 'active'],
    ['session-status-starting', 'STARTING', 'connecting'],
    ['session-status-scan-qr-code', 'SCAN_QR_CODE', 'connecting'],
    ['session-status-failed', 'FAILED', 'error'],
    ['session-status-stopped', 'STOPPED', 'inactive'],
  ])('%s: %s → %s', (name, providerStatus, status) => {
    const body = load(name);
    expect(parseWahaEvent(body)).toEqual([{
      kind: 'channel_status', provider: 'waha', event: 'session.status', status, providerStatus, timestamp: new Date(body.timestamp),
    }]);
  });

  it('a status WAHA adds later is counted, not mapped by guess', () => {
    const body = load('session-status-working');
    body.payload.status = 'HIBERNATING';
    expect(parseWahaEvent(body)[0]).toMatchObject({ kind: 'ignored', reason: 'unknown_status', detail: 'HIBERNATING' });
  });
});

describe('events we only count', () => {
  it.each(['presence.update', 'group.v2.join', 'call.received', 'label.upsert', 'poll.vote', 'chat.archive', 'engine.event', 'message.waiting'])(
    '%s is acknowledged as ignored, whatever its payload',
    (event) => {
      expect(parseWahaEvent({ event, session: 'default', payload: null })).toEqual([{ kind: 'ignored', provider: 'waha', event, reason: 'unhandled_event' }]);
    },
  );
});

describe('malformed WAHA bodies throw ParseError and nothing else', () => {
  const ok = load('gows-text');
  it.each<[string, unknown]>([
    ['null', null], ['an array', [ok]], ['a string', 'message'], ['a number', 42],
    ['no event', { ...ok, event: undefined }], ['a numeric event', { ...ok, event: 5 }], ['an empty event', { ...ok, event: '' }],
    ['a null payload', { ...ok, payload: null }], ['an array payload', { ...ok, payload: [] }], ['no payload', { ...ok, payload: undefined }],
    ['a message without id', { ...ok, payload: { ...ok.payload, id: undefined } }],
    ['a numeric id', { ...ok, payload: { ...ok.payload, id: 123 } }],
    ['fromMe as a string', { ...ok, payload: { ...ok.payload, fromMe: 'false' } }],
    ['from as a number', { ...ok, payload: { ...ok.payload, from: 5511900000001 } }],
    ['body as an object', { ...ok, payload: { ...ok.payload, body: { text: 'x' } } }],
    ['a word for a timestamp', { ...ok, payload: { ...ok.payload, timestamp: 'yesterday' } }],
    ['a timestamp past any date', { ...ok, payload: { ...ok.payload, timestamp: 1e20 } }],
    ['no time at all', { ...ok, timestamp: undefined, payload: { ...ok.payload, timestamp: undefined } }],
    ['media as a string', { ...ok, payload: { ...ok.payload, media: 'http://x' } }],
    ['an ack with a string ack', { ...load('ack-read'), payload: { ...load('ack-read').payload, ack: '3' } }],
    ['a reaction without reaction', { ...load('webjs-reaction-add'), payload: { id: 'x', from: '5511900000005@c.us', fromMe: false } }],
    ['a revoke naming nothing', { ...load('gows-revoked'), payload: { after: null, before: null } }],
    ['a session.status without status', { ...load('session-status-working'), payload: {} }],
  ])('%s', (_label, body) => {
    expect(() => parseWahaEvent(body)).toThrow(ParseError);
  });

  it('a message timestamp of 0 takes the envelope time instead of being parked; without an envelope time it is parked', () => {
    const zero = { ...ok, payload: { ...ok.payload, timestamp: 0 } };
    expect(parseWahaEvent(zero)[0]).toMatchObject({ kind: 'message', timestamp: new Date(ok.timestamp) });
    expect(parseWahaEvent({ ...zero, payload: { ...zero.payload, timestamp: '0' } })[0]).toMatchObject({ kind: 'message', timestamp: new Date(ok.timestamp) });
    expect(() => parseWahaEvent({ ...zero, timestamp: undefined })).toThrow('payload.timestamp is missing');
  });

  it('the ParseError says what was wrong', () => {
    try {
      parseWahaEvent({ ...ok, payload: { ...ok.payload, fromMe: 'false' } });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ParseError);
      expect((e as ParseError).reason).toBe('payload.fromMe must be a boolean, got string');
    }
  });

  // Every field of every fixture replaced by each wrong-typed value: the parser either returns
  // events or throws ParseError. A TypeError here would be a crash on hostile input.
  it('survives every field of every fixture being replaced by a wrong value', () => {
    const runs = mutateFixtures(DIR, (body) => parseWahaEvent(body), (e) => e instanceof ParseError);
    expect(runs).toBeGreaterThan(5000);
  });
});
