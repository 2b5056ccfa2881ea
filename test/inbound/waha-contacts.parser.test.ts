import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { InboundEvent, InboundMessage } from '../../src/domain/inbound.ts';
import { normalizePhone, parseJid, phoneFromJid } from '../../src/domain/phone.ts';
import { wahaMessageKey } from '../../src/inbound/waha/waha-jid.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';

const DIR = new URL('../fixtures/waha/', import.meta.url);
const load = (name: string): any => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8'));
const first = (body: unknown): InboundEvent => parseWahaEvent(body)[0];
const message = (body: unknown): InboundMessage => {
  const e = first(body);
  if (e.kind !== 'message') throw new Error(`expected a message, got ${JSON.stringify(e)}`);
  return e;
};

describe('the contact of a WAHA message is the other party', () => {
  it('GOWS fromMe: the contact is _data.Info.Chat, and our own push name is not theirs', () => {
    const m = message(load('gows-from-me-phone'));
    expect(m).toMatchObject({ fromMe: true, contact: { phone: '+5511900000001', waId: '5511900000001' }, ackStatus: 'sent', source: 'app' });
    expect(m.contact.lid).toBeUndefined();
    expect(m.pushName).toBeUndefined();
  });

  it('WEBJS fromMe sent through the API: the contact is `to`, not us in `from`', () => {
    const m = message(load('webjs-from-me'));
    expect(m).toMatchObject({
      fromMe: true, source: 'api', contact: { phone: '+5511900000005', waId: '5511900000005' },
      externalId: 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', messageKey: '3EB0DEV0000000WEBJS02',
      text: 'Entregamos em até 3 dias úteis.', ackStatus: 'sent',
    });
    expect(m.pushName).toBeUndefined(); // `_data.notifyName` is "Loja Exemplo", i.e. us
  });

  it('fromMe without `to` falls back to the engine chat id', () => {
    const body = load('webjs-from-me');
    delete body.payload.to;
    expect(message(body).contact.phone).toBe('+5511900000005');
  });

  it('fromMe is derived from the engine flag or the id prefix when WAHA omits it', () => {
    const body = load('webjs-from-me');
    delete body.payload.fromMe;
    expect(message(body).fromMe).toBe(true);
  });
});

describe('LIDs are never phones', () => {
  it('GOWS LID chat with the phone in SenderAlt: both kept, so they can be joined', () => {
    expect(message(load('gows-lid-sender-alt'))).toMatchObject({
      externalId: '3EB0DEV00000000LID01', pushName: 'Renata Dias', text: 'Oi, vi o catálogo de vocês',
      contact: { phone: '+5511900000010', waId: '5511900000010', lid: '90000000001010@lid' },
    });
  });

  it('GOWS LID chat with the phone in Sender', () => {
    const body = load('gows-lid-sender-alt');
    body.payload._data.Info.Sender = '5511900000010@s.whatsapp.net';
    delete body.payload._data.Info.SenderAlt;
    expect(message(body).contact).toEqual({ phone: '+5511900000010', waId: '5511900000010', lid: '90000000001010@lid' });
  });

  it('NOWEB LID chat with the phone in key.senderPn (or participantPn)', () => {
    expect(message(load('noweb-lid-sender-pn'))).toMatchObject({
      pushName: 'Tiago Nunes', contact: { phone: '+5511900000011', waId: '5511900000011', lid: '90000000001111@lid' },
    });
    const body = load('noweb-lid-sender-pn');
    body.payload._data.key.participantPn = body.payload._data.key.senderPn;
    delete body.payload._data.key.senderPn;
    expect(message(body).contact.phone).toBe('+5511900000011');
  });

  it('a LID with no phone anywhere keys the contact by the LID alone', () => {
    const m = message(load('webjs-lid-no-phone'));
    expect(m.contact).toEqual({ lid: '90000000001212@lid' });
    expect(m.pushName).toBe('Vera');
  });

  it('on our own message to a LID chat, the sender fields (us) are not read as the contact', () => {
    const body = load('gows-lid-sender-alt');
    Object.assign(body.payload, { fromMe: true, to: '90000000001010@lid' });
    Object.assign(body.payload._data.Info, { IsFromMe: true, Sender: '5511900000000:7@s.whatsapp.net', SenderAlt: '90000000000001@lid' });
    expect(message(body).contact).toEqual({ lid: '90000000001010@lid' });
    // whatsmeow names the peer's phone RecipientAlt on our own messages.
    body.payload._data.Info.RecipientAlt = '5511900000010@s.whatsapp.net';
    expect(message(body).contact).toEqual({ lid: '90000000001010@lid', phone: '+5511900000010', waId: '5511900000010' });
  });

  it('device suffixes are dropped from phone and LID alike', () => {
    expect(message(load('gows-device-suffix'))).toMatchObject({
      contact: { phone: '+5511900000013', waId: '5511900000013', lid: '90000000001313@lid' },
    });
    const body = load('noweb-text');
    body.payload.from = '5511900000006:12@s.whatsapp.net';
    expect(message(body).contact).toEqual({ phone: '+5511900000006', waId: '5511900000006' });
  });
});

describe('groups, Status posts, channels and broadcast lists are skipped and counted', () => {
  it.each([
    ['gows-group-message', 'group', '120363000000000001@g.us'],
    ['gows-status-post', 'status', 'status@broadcast'],
    ['webjs-newsletter', 'newsletter', '120363000000000099@newsletter'],
    ['noweb-broadcast-list', 'broadcast', '1764461000@broadcast'],
  ])('%s → ignored (%s)', (name, reason, detail) => {
    expect(parseWahaEvent(load(name))).toEqual([{ kind: 'ignored', provider: 'waha', event: load(name).event, reason, detail }]);
  });

  it('a group message on an engine without _data.Info is skipped by its `from`', () => {
    const body = load('gows-group-message');
    delete body.payload._data;
    expect(first(body)).toMatchObject({ kind: 'ignored', reason: 'group' });
  });

  it('a chat id that is neither phone nor LID is not guessed into a contact', () => {
    const body = load('noweb-text');
    body.payload.from = 'someone@unknown.server';
    body.payload._data.key.remoteJid = 'someone@unknown.server';
    expect(first(body)).toMatchObject({ kind: 'ignored', reason: 'unknown_address' });
  });
});

describe('JID helpers', () => {
  it.each([
    ['5511900000001@c.us', { kind: 'phone', waId: '5511900000001', phone: '+5511900000001' }],
    ['5511900000001@s.whatsapp.net', { kind: 'phone', waId: '5511900000001', phone: '+5511900000001' }],
    ['5511900000001:12@s.whatsapp.net', { kind: 'phone', waId: '5511900000001', phone: '+5511900000001' }],
    ['5511900000001.0:12@s.whatsapp.net', { kind: 'phone', waId: '5511900000001', phone: '+5511900000001' }],
    ['90000000000011@lid', { kind: 'lid', lid: '90000000000011@lid' }],
    ['90000000000011:3@lid', { kind: 'lid', lid: '90000000000011@lid' }],
    ['120363000000000001@g.us', { kind: 'group', jid: '120363000000000001@g.us' }],
    ['status@broadcast', { kind: 'status', jid: 'status@broadcast' }],
    ['1764461000@broadcast', { kind: 'broadcast', jid: '1764461000@broadcast' }],
    ['120363000000000099@newsletter', { kind: 'newsletter', jid: '120363000000000099@newsletter' }],
    ['0@s.whatsapp.net', { kind: 'unknown', jid: '0@s.whatsapp.net' }],
    ['5511900000001', { kind: 'unknown', jid: '5511900000001' }],
  ])('parseJid(%s)', (jid, expected) => {
    expect(parseJid(jid)).toEqual(expected);
  });

  it('phoneFromJid never turns a LID into a phone', () => {
    expect(phoneFromJid('90000000000011@lid')).toBeUndefined();
    expect(phoneFromJid('5511900000001@c.us')).toBe('+5511900000001');
  });

  it.each([
    ['+55 (11) 90000-0001', '+5511900000001'],
    ['5511900000001', '+5511900000001'],
    ['5511900000001@c.us', '+5511900000001'],
    // The trunk prefix written in brackets after the country code is not part of the number.
    ['+44 (0)20 7946 0958', '+442079460958'],
    ['+49(0)30-1234567', '+49301234567'],
    ['+358 (0) 40 1234567', '+358401234567'],
    ['90000000000011@lid', undefined],
    ['12345', undefined],
    ['call me', undefined],
  ])('normalizePhone(%s)', (input, expected) => {
    expect(normalizePhone(input)).toBe(expected);
  });

  it.each([
    ['false_5511900000001@c.us_3EB0DEV00000000IMG01', '3EB0DEV00000000IMG01'],
    ['true_5511900000001@c.us_3EB0DEV00000000OUT01', '3EB0DEV00000000OUT01'],
    ['false_120363000000000001@g.us_3EB0DEV00000000GRP01_5511900000004@c.us', '3EB0DEV00000000GRP01'],
    ['3EB0DEV000000000TEXT01', '3EB0DEV000000000TEXT01'],
  ])('wahaMessageKey(%s)', (id, key) => {
    expect(wahaMessageKey(id)).toBe(key);
  });
});
