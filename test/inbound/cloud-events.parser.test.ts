import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type InboundMessage, type InboundStatus, ParseError, isForward } from '../../src/domain/inbound.ts';
import { parseCloudWebhook, withoutOtherNumbers } from '../../src/inbound/whatsapp-cloud/cloud.parser.ts';
import { mutateFixtures } from '../support/mutate-fixtures.ts';

const DIR = new URL('../fixtures/whatsapp-cloud/', import.meta.url);
const load = (name: string): any => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8'));
const at = (seconds: number) => new Date(seconds * 1000);
const status = (s: Omit<InboundStatus, 'kind' | 'provider' | 'event' | 'fromMe' | 'messageKey'>): InboundStatus => ({
  kind: 'status', provider: 'whatsapp_cloud', event: 'statuses', fromMe: true, messageKey: s.externalId, ...s,
});

describe('Cloud API statuses', () => {
  it('a status-only POST: delivered, read and failed with its error', () => {
    const recipient = { phone: '+5511900000002', waId: '5511900000002' };
    expect(parseCloudWebhook(load('statuses'))).toEqual([
      status({ externalId: 'wamid.DEV0000000000000000000000000OUT001', status: 'delivered', timestamp: at(1764461300), recipient }),
      status({ externalId: 'wamid.DEV0000000000000000000000000OUT001', status: 'read', timestamp: at(1764461310), recipient }),
      status({
        externalId: 'wamid.DEV0000000000000000000000000OUT002', status: 'failed', timestamp: at(1764461320), recipient,
        error: { code: 131047, title: 'Re-engagement message', message: 'More than 24 hours have passed since the recipient last replied.' },
      }),
    ]);
  });

  it('sent, with conversation and pricing beside it', () => {
    expect(parseCloudWebhook(load('status-sent'))).toEqual([
      status({ externalId: 'wamid.DEV0000000000000000000000000OUT006', status: 'sent', timestamp: at(1764461500), recipient: { phone: '+5511900000016', waId: '5511900000016' } }),
    ]);
  });

  it('played is understood; a status word Meta adds later is counted, not guessed', () => {
    const body = load('status-sent');
    body.entry[0].changes[0].value.statuses[0].status = 'played';
    expect(parseCloudWebhook(body)[0]).toMatchObject({ kind: 'status', status: 'played' });
    body.entry[0].changes[0].value.statuses[0].status = 'deleted';
    expect(parseCloudWebhook(body)).toEqual([{ kind: 'ignored', provider: 'whatsapp_cloud', event: 'statuses', reason: 'unknown_status', detail: 'deleted' }]);
  });

  it('out-of-order statuses: read then a late delivered is not a forward move', () => {
    const [delivered, read] = parseCloudWebhook(load('statuses')) as InboundStatus[];
    expect(isForward(read.status, delivered.status)).toBe(false);
    expect(isForward(delivered.status, read.status)).toBe(true);
  });
});

describe('one POST, many entries and changes', () => {
  it('handles every entry and change, counting fields we do not process', () => {
    const events = parseCloudWebhook(load('multi-entry'));
    expect(events).toEqual([
      expect.objectContaining({ kind: 'message', externalId: 'wamid.DEV00000000000000000000000000MLT01', text: 'Chegou, obrigada!',
        metadata: expect.objectContaining({ phone_number_id: '200000000000001', waba_id: '100000000000001' }) }),
      expect.objectContaining({ kind: 'status', externalId: 'wamid.DEV0000000000000000000000000OUT007', status: 'delivered' }),
      { kind: 'ignored', provider: 'whatsapp_cloud', event: 'message_template_status_update', reason: 'unhandled_event' },
      expect.objectContaining({ kind: 'message', externalId: 'wamid.DEV00000000000000000000000000MLT02', pushName: 'Carlos Lima',
        metadata: expect.objectContaining({ phone_number_id: '200000000000002', waba_id: '100000000000002' }) }),
    ]);
  });

  it('value-level errors are reported as provider errors', () => {
    const body = load('status-sent');
    body.entry[0].changes[0].value = { messaging_product: 'whatsapp', metadata: {}, errors: [{ code: 131000, title: 'Something went wrong', message: 'x' }] };
    expect(parseCloudWebhook(body)).toEqual([{ kind: 'ignored', provider: 'whatsapp_cloud', event: 'errors', reason: 'provider_error', detail: '131000 Something went wrong x' }]);
  });

  it('an empty change is counted rather than silently dropped', () => {
    const body = load('status-sent');
    body.entry[0].changes[0].value = { messaging_product: 'whatsapp', metadata: {} };
    expect(parseCloudWebhook(body)).toEqual([{ kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'unhandled_event', detail: 'empty change' }]);
  });

});

describe("changes addressed to another business number than the channel's", () => {
  const channel = { phoneNumberId: '200000000000001' };

  it('skips a change for another phone_number_id as ignored, keeping the other changes of the POST', () => {
    expect(parseCloudWebhook(load('other-phone-number'), channel)).toEqual([
      { kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'other_phone_number', detail: "phone_number_id 200000000000003 is not this channel's (200000000000001)" },
      expect.objectContaining({ kind: 'message', externalId: 'wamid.DEV00000000000000000000000000OPN01', text: 'Mensagem para este número' }),
    ]);
    // Across entries too: the second entry of multi-entry is another number's.
    expect(parseCloudWebhook(load('multi-entry'), channel).map((e) => (e.kind === 'ignored' ? e.reason : e.kind))).toEqual(['message', 'status', 'unhandled_event', 'other_phone_number']);
  });

  it("skips another number's statuses too, so they never touch this channel's messages", () => {
    const body = load('statuses');
    body.entry[0].changes[0].value.metadata.phone_number_id = '200000000000009';
    expect(parseCloudWebhook(body, channel)).toEqual([expect.objectContaining({ kind: 'ignored', reason: 'other_phone_number' })]);
  });

  it('processes a change that names no phone_number_id, and everything when the channel number is not known', () => {
    const body = load('text');
    delete body.entry[0].changes[0].value.metadata;
    expect(parseCloudWebhook(body, channel)).toEqual([expect.objectContaining({ kind: 'message' })]);
    expect(parseCloudWebhook(load('other-phone-number')).map((e) => e.kind)).toEqual(['message', 'message']);
  });
});

describe('malformed Cloud bodies: a frame that cannot be read throws ParseError, an item becomes a malformed event', () => {
  const ok = load('text');
  const withMessage = (patch: Record<string, unknown>) => {
    const b = structuredClone(ok);
    Object.assign(b.entry[0].changes[0].value.messages[0], patch);
    return b;
  };
  it.each<[string, unknown]>([
    ['null', null], ['an array', [ok]], ['a string', 'x'], ['no object', { entry: [] }],
    ['another object type', { ...ok, object: 'page' }], ['no entry', { object: 'whatsapp_business_account' }],
    ['entry as an object', { ...ok, entry: {} }], ['a null entry', { ...ok, entry: [null] }],
    ['an entry without changes', { ...ok, entry: [{ id: '1' }] }],
  ])('%s', (_label, body) => {
    expect(() => parseCloudWebhook(body)).toThrow(ParseError);
  });

  it.each<[string, unknown]>([
    ['a message without id', withMessage({ id: undefined })],
    ['a message without sender', withMessage({ from: undefined })],
    ['a numeric from', withMessage({ from: 5511900000001 })],
    ['a non-numeric timestamp', withMessage({ timestamp: 'now' })],
    ['a timestamp past any date', withMessage({ timestamp: '99999999999999999' })],
    ['text without body', withMessage({ text: {} })],
    ['an image without id', withMessage({ type: 'image', image: { mime_type: 'image/jpeg' } })],
    ['a location without coordinates', withMessage({ type: 'location', location: { name: 'x' } })],
    ['a reaction without target', withMessage({ type: 'reaction', reaction: { emoji: '👍' } })],
    ['a status without id', { ...ok, entry: [{ id: '1', changes: [{ field: 'messages', value: { statuses: [{ status: 'read', timestamp: '1' }] } }] }] }],
  ])('%s', (_label, body) => {
    const events = parseCloudWebhook(body);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ kind: 'ignored', provider: 'whatsapp_cloud', reason: 'malformed', detail: expect.stringMatching(/^body\.entry\[0\]\.changes\[0\]\.value\.(messages|statuses)\[0\]/) });
  });

  it('an entry with an empty list of changes is counted, not silently dropped', () => {
    expect(parseCloudWebhook({ ...ok, entry: [{ id: '1', changes: [] }] })).toEqual([
      { kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'unhandled_event', detail: 'entry without changes' },
    ]);
  });

  it('a timestamp in milliseconds is read as milliseconds, as for WAHA (one past the year 9999 stays malformed)', () => {
    expect(parseCloudWebhook(withMessage({ timestamp: '1764460800000' }))[0]).toMatchObject({ kind: 'message', timestamp: new Date(1764460800000) });
    const statuses = load('statuses');
    statuses.entry[0].changes[0].value.statuses[0].timestamp = '1764460800000';
    expect(parseCloudWebhook(statuses)[0]).toMatchObject({ kind: 'status', timestamp: new Date(1764460800000) });
  });

  // A change's own fields are not the frame: such a change costs that change only.
  it.each<[string, unknown]>([
    ['messages as an object', { field: 'messages', value: { messages: {} } }],
    ['contacts as an object', { field: 'messages', value: { contacts: {}, messages: [] } }],
    ['a numeric phone_number_id', { field: 'messages', value: { metadata: { phone_number_id: 1 }, messages: [] } }],
    ['no field', { value: {} }],
    ['a null value', { field: 'messages', value: null }],
    ['no value', { field: 'messages' }],
    ['itself null', null],
  ])('a change with %s is one malformed event, and the next change is read', (_label, change) => {
    const body = structuredClone(ok);
    body.entry[0].changes.unshift(change);
    const events = parseCloudWebhook(body);
    expect(events.map((e) => e.kind)).toEqual(['ignored', 'message']);
    expect(events[0]).toMatchObject({ reason: 'malformed', detail: expect.stringMatching(/^body\.entry\[0\]\.changes\[0\]/) });
  });

  it("keeps nothing of another number's changes in a parked body but their place, field and number", () => {
    const body = structuredClone(load('multi-entry'));
    const mine = '200000000000001';
    const kept = withoutOtherNumbers(body, mine) as typeof body;
    const theirs = body.entry.flatMap((e: any) => e.changes).filter((c: any) => c.value?.metadata?.phone_number_id === '200000000000002');
    expect(theirs.length).toBeGreaterThan(0);
    for (const c of theirs) expect(JSON.stringify(c.value).length).toBeGreaterThan(100);
    const keptTheirs = kept.entry.flatMap((e: any) => e.changes).filter((c: any) => c.value?.metadata?.phone_number_id === '200000000000002');
    expect(keptTheirs).toEqual(theirs.map((c: any) => ({ field: c.field, value: { metadata: { phone_number_id: '200000000000002' } } })));
    // Same shape, and it reads as before: the same events, the other number's skipped again.
    expect(kept.entry.map((e: any) => e.changes.length)).toEqual(body.entry.map((e: any) => e.changes.length));
    expect(parseCloudWebhook(kept, { phoneNumberId: mine })).toEqual(parseCloudWebhook(body, { phoneNumberId: mine }));
    // Nothing to leave out (or no number to tell them by): the body itself.
    const own = load('text');
    expect(withoutOtherNumbers(own, mine)).toBe(own);
    expect(withoutOtherNumbers(body, undefined)).toBe(body);
    expect(withoutOtherNumbers('not json', mine)).toBe('not json');
  });

  // Contacts only name the senders, and errors only report: a list of them we cannot read must
  // not cost the messages and statuses beside it.
  it.each<[string, Record<string, unknown>, string, string]>([
    ['contacts as an object', { contacts: { wa_id: '5511900000001' } }, 'messages', 'contacts must be an array, got object'],
    ['contacts as a string', { contacts: 'Joana' }, 'messages', 'contacts must be an array, got string'],
    ['errors as an object', { errors: { code: 131000 } }, 'errors', 'errors must be an array, got object'],
    ['errors as a number', { errors: 131000 }, 'errors', 'errors must be an array, got number'],
    ['statuses as an object', { statuses: { id: 'wamid.OUT' } }, 'statuses', 'statuses must be an array, got object'],
  ])('a change with %s: that part is one malformed event, its messages and statuses are still read', (_label, patch, event, problem) => {
    const body = structuredClone(ok);
    const value = body.entry[0].changes[0].value;
    value.statuses = [{ id: 'wamid.OUT', status: 'read', timestamp: '1764460800', recipient_id: '5511900000001' }];
    Object.assign(value, patch);
    const events = parseCloudWebhook(body);
    const bad = events.filter((e) => e.kind === 'ignored');
    expect(bad).toEqual([{ kind: 'ignored', provider: 'whatsapp_cloud', event, reason: 'malformed', detail: `body.entry[0].changes[0].value.${problem}` }]);
    expect(events.filter((e) => e.kind !== 'ignored').map((e) => e.kind)).toEqual(event === 'statuses' ? ['message'] : ['message', 'status']);
    const message = events.find((e) => e.kind === 'message') as InboundMessage;
    expect(message).toMatchObject({ externalId: 'wamid.DEV0000000000000000000000000TEXT01', text: 'Oi! Vocês abrem no sábado?' });
    // Without readable contacts there is no push name, and nothing else is lost.
    expect(message.pushName).toBe('contacts' in patch ? undefined : 'Joana Prado');
  });

  it('keeps the readable items around an unreadable one, in order', () => {
    const body = structuredClone(ok);
    const value = body.entry[0].changes[0].value;
    value.messages = [{ ...value.messages[0], id: 'wamid.A' }, { ...value.messages[0], id: 'wamid.B', from: undefined }, { ...value.messages[0], id: 'wamid.C' }];
    value.statuses = [{ id: 'wamid.OUT', status: 'read', timestamp: '1764460800', recipient_id: '5511900000001' }];
    expect(parseCloudWebhook(body).map((e) => (e.kind === 'ignored' ? `${e.reason}: ${e.detail}` : `${e.kind} ${'externalId' in e ? e.externalId : ''}`))).toEqual([
      'message wamid.A',
      'malformed: body.entry[0].changes[0].value.messages[1].from must be a non-empty string, got undefined',
      'message wamid.C',
      'status wamid.OUT',
    ]);
  });

  it('survives every field of every fixture being replaced by a wrong value', () => {
    const runs = mutateFixtures(DIR, (body) => parseCloudWebhook(body), (e) => e instanceof ParseError);
    expect(runs).toBeGreaterThan(3000);
  });
});

describe('Cloud API extras kept in metadata', () => {
  it('a product enquiry, a frequently forwarded message, an identity hash', () => {
    const body = load('text');
    const m = body.entry[0].changes[0].value.messages[0];
    m.context = { from: '5511900000000', id: 'wamid.CATALOG', frequently_forwarded: true, referred_product: { catalog_id: '1234', product_retailer_id: 'sku-9' } };
    m.identity = { acknowledged: true, created_timestamp: 1764460000, hash: 'Sjvjlx8G6Z0=' };
    const [e] = parseCloudWebhook(body);
    expect(e).toMatchObject({
      kind: 'message',
      metadata: {
        frequently_forwarded: true,
        referred_product: { catalog_id: '1234', product_retailer_id: 'sku-9' },
        identity: { acknowledged: true, created_timestamp: 1764460000, hash: 'Sjvjlx8G6Z0=' },
      },
    });
  });

  it("a location's URL and an animated sticker", () => {
    const loc = load('location');
    loc.entry[0].changes[0].value.messages[0].location.url = 'https://maps.example.com/p/1';
    expect(parseCloudWebhook(loc)[0]).toMatchObject({ metadata: { location_url: 'https://maps.example.com/p/1' } });
    const sticker = load('sticker');
    sticker.entry[0].changes[0].value.messages[0].sticker.animated = true;
    expect(parseCloudWebhook(sticker)[0]).toMatchObject({ type: 'sticker', metadata: { animated: true } });
  });

  it('leaves them out when Meta sends none, or sends them of the wrong shape', () => {
    const body = load('text');
    body.entry[0].changes[0].value.messages[0].context = { id: 'wamid.X', referred_product: 'sku', frequently_forwarded: 'yes' };
    body.entry[0].changes[0].value.messages[0].identity = 7;
    const [e] = parseCloudWebhook(body) as any[];
    expect(e.metadata).not.toHaveProperty('referred_product');
    expect(e.metadata).not.toHaveProperty('frequently_forwarded');
    expect(e.metadata).not.toHaveProperty('identity');
  });
});
