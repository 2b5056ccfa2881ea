import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ParseError, type InboundEvent, type InboundMessage } from '../../src/domain/inbound.ts';
import { parseWahaEnvelope, parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';

const DIR = new URL('../fixtures/waha/', import.meta.url);
const load = (name: string): unknown => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8'));
const one = (name: string): InboundEvent => {
  const events = parseWahaEvent(load(name));
  expect(events).toHaveLength(1);
  return events[0];
};
const at = (seconds: number) => new Date(seconds * 1000);

// Fills what every WAHA message from a contact has in common, so each test states what is particular.
function incoming(engine: 'GOWS' | 'NOWEB' | 'WEBJS', m: Partial<InboundMessage> & Pick<InboundMessage, 'externalId' | 'messageKey' | 'contact' | 'type' | 'timestamp'>, rawType: string, event = 'message'): InboundMessage {
  const session = { GOWS: 'loja-principal', NOWEB: 'loja-noweb', WEBJS: 'loja-webjs' }[engine];
  return { kind: 'message', provider: 'waha', event, fromMe: false, source: 'app', ...m, metadata: { event, raw_type: rawType, engine, session, ...m.metadata } };
}

// Every fixture file must be listed here with what it becomes, so a new fixture cannot go unchecked.
const EXPECTED_KIND: Record<string, string> = {
  'ack-delivered': 'status', 'ack-error': 'status', 'ack-read': 'status', 'ack-server': 'status',
  'gows-ad-referral': 'message', 'gows-audio': 'message', 'gows-device-suffix': 'message', 'gows-document': 'message',
  'gows-edited': 'edit', 'gows-from-me-phone': 'message', 'gows-group-message': 'ignored:group',
  'gows-image-caption': 'message', 'gows-lid-sender-alt': 'message', 'gows-location': 'message', 'gows-poll': 'message',
  'gows-revoked': 'revoke', 'gows-status-post': 'ignored:status', 'gows-sticker': 'message', 'gows-text': 'message',
  'gows-vcard': 'message', 'gows-video': 'message', 'gows-voice': 'message',
  'noweb-ad-referral': 'message', 'noweb-broadcast-list': 'ignored:broadcast', 'noweb-document': 'message',
  'noweb-lid-sender-pn': 'message', 'noweb-text': 'message',
  'presence-update': 'ignored:unhandled_event',
  'session-status-failed': 'channel_status', 'session-status-scan-qr-code': 'channel_status',
  'session-status-starting': 'channel_status', 'session-status-stopped': 'channel_status',
  'session-status-working': 'channel_status',
  'webjs-ad-referral': 'message', 'webjs-from-me': 'message', 'webjs-lid-no-phone': 'message',
  'webjs-newsletter': 'ignored:newsletter', 'webjs-poll': 'message', 'webjs-reaction-add': 'reaction',
  'webjs-reaction-remove': 'reaction', 'webjs-reply': 'message', 'webjs-text': 'message',
  // Edge cases of each engine, beyond the shared samples.
  'webjs-ack-read': 'status', 'noweb-broadcast-from-contact': 'message', 'webjs-e2e-notification': 'ignored:protocol_message',
  'noweb-album-image': 'message', 'webjs-location-named': 'message', 'webjs-document-not-downloaded': 'message',
  'webjs-group-ack-lid': 'ignored:group', 'gows-edited-empty': 'parse_error',
  'noweb-long-timestamp': 'message', 'noweb-list-response': 'message', 'gows-own-chat': 'ignored:own_chat',
};

describe('WAHA fixtures', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();

  it('lists every fixture file with its expected outcome', () => {
    expect(files).toEqual(Object.keys(EXPECTED_KIND).sort());
  });

  it.each(files)('%s parses to exactly one event of the expected kind', (name) => {
    if (EXPECTED_KIND[name] === 'parse_error') return void expect(() => parseWahaEvent(load(name))).toThrow(ParseError);
    const e = one(name);
    expect(e.provider).toBe('waha');
    expect(e.kind === 'ignored' ? `ignored:${e.reason}` : e.kind).toBe(EXPECTED_KIND[name]);
  });

  it('reads the envelope: event id, session, engine, time and our own id', () => {
    expect(parseWahaEnvelope(load('noweb-text'))).toEqual({
      id: 'evt_01kdev000000000000000noweb', event: 'message', session: 'loja-noweb', engine: 'NOWEB',
      timestamp: new Date(1764461460000), me: '5511900000000@c.us', meLid: '90000000000001@lid',
    });
    // GOWS fixtures carry the engine only inside `environment`.
    expect(parseWahaEnvelope(load('gows-text')).engine).toBe('GOWS');
  });
});

describe('WAHA message content', () => {
  it('GOWS text: bare id kept as received, phone from the chat, LID kept beside it, push name, ack', () => {
    expect(one('gows-text')).toEqual(incoming('GOWS', {
      externalId: '3EB0DEV000000000TEXT01', messageKey: '3EB0DEV000000000TEXT01',
      contact: { phone: '+5511900000001', waId: '5511900000001', lid: '90000000000011@lid' },
      pushName: 'Joana Prado', type: 'text', text: 'Oi! Vocês abrem no sábado?', timestamp: at(1764460800), ackStatus: 'delivered',
    }, 'conversation'));
  });

  it('GOWS image: the caption is the text, media url and mimetype kept', () => {
    expect(one('gows-image-caption')).toEqual(incoming('GOWS', {
      externalId: 'false_5511900000001@c.us_3EB0DEV00000000IMG01', messageKey: '3EB0DEV00000000IMG01',
      contact: { phone: '+5511900000001', waId: '5511900000001' }, pushName: 'Joana Prado', type: 'image',
      text: 'Esse modelo tem em azul?', timestamp: at(1764460859), ackStatus: 'delivered',
      media: { url: 'http://localhost:3000/api/files/loja-principal/3EB0DEV00000000IMG01.jpeg', mimetype: 'image/jpeg' },
    }, 'imageMessage', 'message.any'));
  });

  it('GOWS video with caption, sticker, PTT voice and plain audio get their own types', () => {
    const video = one('gows-video') as InboundMessage;
    expect([video.type, video.text, video.media]).toEqual(['video', 'Olha o defeito na costura',
      { url: 'http://localhost:3000/api/files/loja-principal/3EB0DEV00000000VID01.mp4', mimetype: 'video/mp4' }]);

    const sticker = one('gows-sticker') as InboundMessage;
    expect([sticker.type, sticker.text, sticker.media?.mimetype, sticker.metadata.raw_type]).toEqual(['sticker', undefined, 'image/webp', 'stickerMessage']);

    const voice = one('gows-voice') as InboundMessage;
    expect([voice.type, voice.text, voice.media]).toEqual(['voice', undefined,
      { url: 'http://localhost:3000/api/files/loja-principal/3EB0DEV00000000PTT01.oga', mimetype: 'audio/ogg; codecs=opus' }]);

    const audio = one('gows-audio') as InboundMessage;
    expect([audio.type, audio.media?.mimetype, audio.metadata.raw_type]).toEqual(['audio', 'audio/mpeg', 'audioMessage']);
  });

  it('GOWS document keeps its filename', () => {
    const m = one('gows-document') as InboundMessage;
    expect([m.type, m.text, m.media]).toEqual(['document', undefined, {
      url: 'http://localhost:3000/api/files/loja-principal/3EB0DEV00000000DOC01.pdf', mimetype: 'application/pdf', filename: 'orcamento-novembro.pdf',
    }]);
  });

  it('NOWEB document WAHA did not download: filename and mimetype come from the raw message, no url', () => {
    expect(one('noweb-document')).toEqual(incoming('NOWEB', {
      externalId: 'false_5511900000006@c.us_3EB0DEV0000000NOWEB03', messageKey: '3EB0DEV0000000NOWEB03',
      contact: { phone: '+5511900000006', waId: '5511900000006' }, pushName: 'Luiza Alves', type: 'document',
      timestamp: at(1764461819), ackStatus: 'delivered',
      media: { mimetype: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet', filename: 'pedido-1234.xlsx' },
    }, 'documentMessage'));
  });

  it('GOWS location keeps the coordinates', () => {
    const m = one('gows-location') as InboundMessage;
    expect([m.type, m.text, m.location]).toEqual(['location', undefined, { latitude: -23.5613, longitude: -46.6565 }]);
  });

  it('GOWS vCard keeps the card and its display name, not the card as text', () => {
    const m = one('gows-vcard') as InboundMessage;
    expect(m.type).toBe('contact');
    expect(m.text).toBeUndefined();
    expect(m.contactCard).toEqual({
      displayName: 'Marta Souza',
      vcards: ['BEGIN:VCARD\nVERSION:3.0\nN:Souza;Marta;;;\nFN:Marta Souza\nTEL;type=CELL;waid=5511900000009:+55 11 90000-0009\nEND:VCARD'],
    });
  });

  it('NOWEB text: push name from _data.pushName', () => {
    expect(one('noweb-text')).toEqual(incoming('NOWEB', {
      externalId: 'false_5511900000006@c.us_3EB0DEV000000NOWEB01', messageKey: '3EB0DEV000000NOWEB01',
      contact: { phone: '+5511900000006', waId: '5511900000006' }, pushName: 'Luiza Alves', type: 'text',
      text: 'Preciso trocar um produto', timestamp: at(1764461459), ackStatus: 'delivered',
    }, 'conversation'));
  });

  it('WEBJS text: push name from _data.notifyName, type from _data.type', () => {
    expect(one('webjs-text')).toEqual(incoming('WEBJS', {
      externalId: 'false_5511900000005@c.us_AAAADEV0000000WEBJS01', messageKey: 'AAAADEV0000000WEBJS01',
      contact: { phone: '+5511900000005', waId: '5511900000005' }, pushName: 'Paulo Reis', type: 'text',
      text: 'Boa tarde, qual o prazo de entrega?', timestamp: at(1764461399), ackStatus: 'sent',
    }, 'chat'));
  });

  it('a reply carries the quoted message id as received and its bare key', () => {
    const m = one('webjs-reply') as InboundMessage;
    expect([m.text, m.replyToExternalId, m.replyToKey]).toEqual(['E para o interior?', 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', '3EB0DEV0000000WEBJS02']);
  });

  it('an unfamiliar type is kept as unknown with its raw type, never dropped', () => {
    const gows = one('gows-poll') as InboundMessage;
    expect([gows.kind, gows.type, gows.metadata.raw_type, gows.contact.phone]).toEqual(['message', 'unknown', 'pollCreationMessageV3', '+5511900000002']);
    const webjs = one('webjs-poll') as InboundMessage;
    expect([webjs.kind, webjs.type, webjs.metadata.raw_type]).toEqual(['message', 'unknown', 'poll_creation']);
    // A poll's question is its text (WAHA leaves the body empty).
    expect([gows.text, webjs.text]).toEqual(['Qual horário prefere?', 'Qual horário prefere?']);
    const gowsMediaType = load('gows-poll') as any;
    delete gowsMediaType.payload._data.Message;
    gowsMediaType.payload._data.Info.MediaType = 'poll_creation';
    expect(parseWahaEvent(gowsMediaType)[0]).toMatchObject({ type: 'unknown', metadata: { raw_type: 'poll_creation' } });
  });

  it('without any engine detail the type is inferred from WAHA fields', () => {
    const body = load('gows-image-caption') as any;
    delete body.payload._data;
    expect(parseWahaEvent(body)[0]).toMatchObject({ type: 'image', text: 'Esse modelo tem em azul?' });
    body.payload.media.mimetype = 'application/zip';
    expect(parseWahaEvent(body)[0]).toMatchObject({ type: 'document' });
  });

  it('unwraps disappearing-chat envelopes to find the real content', () => {
    const body = load('noweb-text') as any;
    body.payload._data.message = { ephemeralMessage: { message: { imageMessage: { mimetype: 'image/png', caption: 'oi' } } } };
    body.payload.body = '';
    expect(parseWahaEvent(body)[0]).toMatchObject({ type: 'image', text: 'oi', media: { mimetype: 'image/png' }, metadata: { raw_type: 'imageMessage' } });
  });
});

describe('WAHA click-to-WhatsApp ads', () => {
  it('GOWS: externalAdReply and the conversion fields beside it', () => {
    expect((one('gows-ad-referral') as InboundMessage).ad).toEqual({
      source_type: 'ad', source_id: '120200000000000001', source_url: 'https://www.instagram.com/p/FAKEPOST01/',
      source_app: 'instagram', ctwa_clid: 'FAKE-CTWA-CLID-0001', headline: 'BLACK FRIDAY LOJA EXEMPLO',
      body: 'Até 50% em toda a loja. Fale com a gente!', media_type: 'image', media_url: 'https://www.instagram.com/p/FAKEPOST01/',
      thumbnail_url: 'https://scontent.example/fake-thumb.jpg', conversion_source: 'FB_Ads', conversion_data: 'ZmFrZS1jb252ZXJzaW9uLWRhdGE=',
      entry_point: 'ctwa_ad', entry_point_app: 'instagram', entry_point_external_source: 'FB_Ads',
    });
  });

  it('NOWEB: the same context with Baileys field casing', () => {
    const m = one('noweb-ad-referral') as InboundMessage;
    expect(m.text).toBe('Quero o kit da promoção');
    expect(m.ad).toEqual({
      source_type: 'ad', source_id: '120200000000000002', source_url: 'https://fb.me/FAKEAD02', source_app: 'facebook',
      ctwa_clid: 'FAKE-CTWA-CLID-0003', headline: 'KIT VERÃO', body: 'Kit completo por R$ 99', media_type: 'video',
      media_url: 'https://www.facebook.com/watch/?v=100000000000002', thumbnail_url: 'https://scontent.example/fake-thumb2.jpg',
      conversion_source: 'FB_Ads', conversion_data: 'ZmFrZS1jb252ZXJzaW9uLWRhdGEtMg==', entry_point: 'ctwa_ad', entry_point_app: 'facebook',
    });
  });

  it('WEBJS: _data.ctwaContext, its description being the ad body', () => {
    expect((one('webjs-ad-referral') as InboundMessage).ad).toEqual({
      source_type: 'ad', source_id: '120200000000000004', source_url: 'https://fb.me/FAKEAD04', source_app: 'instagram',
      headline: 'TÊNIS CORRIDA', body: 'Frete grátis hoje', media_type: 'image', thumbnail_url: 'https://scontent.example/fake-thumb3.jpg',
      conversion_source: 'FB_Ads', conversion_data: 'ZmFrZS1jb252ZXJzaW9uLWRhdGEtMw==',
    });
  });

  it('an ordinary message has no ad; a link preview without a source id is not an ad', () => {
    expect((one('gows-text') as InboundMessage).ad).toBeUndefined();
    const body = load('gows-ad-referral') as any;
    const ci = body.payload._data.Message.extendedTextMessage.contextInfo;
    body.payload._data.Message.extendedTextMessage.contextInfo = { externalAdReply: { title: ci.externalAdReply.title, sourceURL: 'https://example.com' } };
    expect((parseWahaEvent(body)[0] as InboundMessage).ad).toBeUndefined();
  });
});

describe('WAHA engine edge cases', () => {
  it('WEBJS: an ack is dated by its webhook, not by the acked message WEBJS sends whole', () => {
    expect(one('webjs-ack-read')).toEqual({
      kind: 'status', provider: 'waha', event: 'message.ack',
      externalId: 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', messageKey: '3EB0DEV0000000WEBJS02',
      status: 'read', fromMe: true, timestamp: new Date(1764465180000), recipient: { phone: '+5511900000005', waId: '5511900000005' },
    });
  });

  it("NOWEB: a contact's message to a broadcast list of theirs is a message from them; our own list stays skipped", () => {
    expect(one('noweb-broadcast-from-contact')).toMatchObject({
      kind: 'message', fromMe: false, contact: { phone: '+5511900000007', waId: '5511900000007' }, pushName: 'Tiago Nunes',
      type: 'text', text: 'Oi, tem estoque do tênis azul?', messageKey: '3EB0DEV00000000BRD02', timestamp: at(1764461759),
    });
    expect(one('noweb-broadcast-list')).toMatchObject({ kind: 'ignored', reason: 'broadcast' });
    // GOWS names the list as Info.Chat and the contact as Info.Sender.
    const gows = load('gows-text') as any;
    Object.assign(gows.payload._data.Info, { Chat: '1764400000@broadcast', Sender: '5511900000007@s.whatsapp.net', SenderAlt: '90000000000077@lid' });
    expect(parseWahaEvent(gows)[0]).toMatchObject({ kind: 'message', contact: { phone: '+5511900000007', lid: '90000000000077@lid' } });
    // Without a sender it cannot be anyone's: skipped as before.
    const nobody = load('noweb-broadcast-from-contact') as any;
    delete nobody.payload.participant;
    delete nobody.payload._data.key.participant;
    expect(parseWahaEvent(nobody)[0]).toMatchObject({ kind: 'ignored', reason: 'broadcast' });
  });

  it("WEBJS: WhatsApp's own notices in a chat (security code, missed call, group notice) are skipped and counted", () => {
    expect(one('webjs-e2e-notification')).toEqual({ kind: 'ignored', provider: 'waha', event: 'message', reason: 'protocol_message', detail: 'e2e_notification' });
    for (const type of ['call_log', 'notification_template', 'gp2', 'revoked']) {
      const body = load('webjs-e2e-notification') as any;
      body.payload._data.type = type;
      expect(parseWahaEvent(body)[0], type).toMatchObject({ kind: 'ignored', reason: 'protocol_message', detail: type });
    }
  });

  it('NOWEB: an album photo is an image (associatedChildMessage unwrapped), as are newer wrappers', () => {
    expect(one('noweb-album-image')).toMatchObject({
      kind: 'message', type: 'image', text: 'foto 2 do pedido', metadata: { raw_type: 'imageMessage' },
      media: { url: 'http://localhost:3000/api/files/loja-noweb/3EB0DEV00000000ALB01.jpeg', mimetype: 'image/jpeg' },
    });
    const wrapped = load('noweb-album-image') as any;
    wrapped.payload._data.message = { groupMentionedMessage: { message: { conversation: 'oi @grupo' } } };
    wrapped.payload.body = 'oi @grupo';
    wrapped.payload.hasMedia = false;
    delete wrapped.payload.media;
    expect(parseWahaEvent(wrapped)[0]).toMatchObject({ type: 'text', text: 'oi @grupo', metadata: { raw_type: 'conversation' } });
  });

  it("a raw type we do not know keeps it, but WAHA's own fields still say a file or a place; text stays unknown", () => {
    const file = load('noweb-album-image') as any;
    file.payload._data.message = { someFutureMessage: { caption: 'x' } };
    expect(parseWahaEvent(file)[0]).toMatchObject({ type: 'image', metadata: { raw_type: 'someFutureMessage' } });
    const text = load('noweb-text') as any;
    text.payload._data.message = { someFutureMessage: {} };
    expect(parseWahaEvent(text)[0]).toMatchObject({ type: 'unknown', metadata: { raw_type: 'someFutureMessage' } });
  });

  it("WEBJS: a location keeps its place name and address apart; a file WAHA did not download keeps its type and name", () => {
    const place = one('webjs-location-named') as InboundMessage;
    expect(place.text).toBeUndefined(); // the body is a thumbnail
    expect(place).toMatchObject({
      type: 'location', location: { latitude: -23.5613, longitude: -46.6565, name: 'Loja Centro', address: 'Av. Paulista 1000, São Paulo' },
    });
    const doc = one('webjs-document-not-downloaded') as InboundMessage;
    expect(doc).toMatchObject({ type: 'document', media: { mimetype: 'application/pdf', filename: 'nota-fiscal.pdf' } });
    expect(doc.media?.url).toBeUndefined();
  });

  it('WEBJS: the ack of our message in a group is skipped when WEBJS names us by our LID', () => {
    expect(one('webjs-group-ack-lid')).toEqual({ kind: 'ignored', provider: 'waha', event: 'message.ack', reason: 'group', detail: '120363000000000001@g.us' });
  });

  it('an edit whose new text WAHA could not read ("") is a parse error, not an edit to nothing', () => {
    expect(() => parseWahaEvent(load('gows-edited-empty'))).toThrow(/payload\.body is empty: an edit names its new text/);
  });
});

describe('WAHA answers to polls, buttons and lists', () => {
  it('NOWEB: a list answer with an empty body keeps the chosen row as its text', () => {
    expect(one('noweb-list-response')).toEqual(incoming('NOWEB', {
      externalId: 'false_5511900000019@c.us_3EB0DEV0000000NOWEB06', messageKey: '3EB0DEV0000000NOWEB06',
      contact: { phone: '+5511900000019', waId: '5511900000019' }, pushName: 'Bruna Teixeira', type: 'unknown',
      text: 'Entrega expressa', replyToExternalId: '3EB0DEV0000000NOWOUT02', replyToKey: '3EB0DEV0000000NOWOUT02',
      timestamp: at(1764465299), ackStatus: 'delivered',
    }, 'listResponseMessage'));
  });

  it.each<[string, unknown, string]>([
    ['pollCreationMessage', { name: 'Sim ou não?', options: [{ optionName: 'Sim' }] }, 'Sim ou não?'],
    ['pollCreationMessageV2', { name: 'Qual cor?', options: [] }, 'Qual cor?'],
    ['pollCreationMessageV3', { name: 'Qual tamanho?', options: [] }, 'Qual tamanho?'],
    ['buttonsResponseMessage', { selectedButtonId: 'b1', selectedDisplayText: 'Quero comprar', type: 1 }, 'Quero comprar'],
    ['listResponseMessage', { title: 'Retirar na loja', singleSelectReply: { selectedRowId: 'r1' } }, 'Retirar na loja'],
    ['templateButtonReplyMessage', { selectedId: 't1', selectedDisplayText: 'Falar com atendente', selectedIndex: 0 }, 'Falar com atendente'],
    ['interactiveResponseMessage', { body: { text: 'Confirmar pedido', format: 1 }, nativeFlowResponseMessage: { name: 'x' } }, 'Confirmar pedido'],
  ])('%s: its words are the text when the body is empty, its type unchanged', (key, value, text) => {
    for (const name of ['noweb-text', 'gows-text']) {
      const body = load(name) as any;
      body.payload.body = '';
      if (name === 'noweb-text') body.payload._data.message = { [key]: value };
      else body.payload._data.Message = { [key]: value };
      expect(parseWahaEvent(body)[0], name).toMatchObject({ kind: 'message', type: 'unknown', text, metadata: { raw_type: key } });
    }
  });

  it("WAHA's body still comes first; an answer without its words has no text", () => {
    const body = load('noweb-list-response') as any;
    body.payload.body = 'Entrega expressa (R$ 20)';
    expect(parseWahaEvent(body)[0]).toMatchObject({ text: 'Entrega expressa (R$ 20)' });
    body.payload.body = '';
    delete body.payload._data.message.listResponseMessage.title;
    expect((parseWahaEvent(body)[0] as InboundMessage).text).toBeUndefined();
  });
});

describe('NOWEB protobuf Long timestamps', () => {
  it('a Long {low, high, unsigned} is read as its number of seconds', () => {
    expect(one('noweb-long-timestamp')).toMatchObject({ kind: 'message', timestamp: at(1764465239), text: 'Vocês têm o tamanho 42?' });
  });

  it('reads both halves, a low half past 2^31 (negative in Long.js) too, and milliseconds as milliseconds', () => {
    const time = (timestamp: unknown) => {
      const body = load('noweb-long-timestamp') as any;
      body.payload.timestamp = timestamp;
      return (parseWahaEvent(body)[0] as InboundMessage).timestamp;
    };
    // 3_000_000_000 s: its low 32 bits read as a signed int are 3_000_000_000 - 2^32.
    expect(time({ low: 3_000_000_000 - 2 ** 32, high: 0, unsigned: true })).toEqual(at(3_000_000_000));
    const ms = 1764465239123;
    expect(time({ low: ms % 2 ** 32, high: Math.floor(ms / 2 ** 32), unsigned: true })).toEqual(new Date(ms));
    expect(time({ low: 1764465239, high: 0, unsigned: false })).toEqual(at(1764465239));
  });

  it('a Long of 0 takes the envelope time, as a 0 does; an object that is no Long stays a parse error', () => {
    const body = load('noweb-long-timestamp') as any;
    body.payload.timestamp = { low: 0, high: 0, unsigned: true };
    expect(parseWahaEvent(body)[0]).toMatchObject({ kind: 'message', timestamp: new Date(body.timestamp) });
    body.payload.timestamp = { low: 'x', high: 0 };
    expect(() => parseWahaEvent(body)).toThrow(ParseError);
  });
});

describe("the business's own chat", () => {
  const OWN = { kind: 'ignored', provider: 'waha', reason: 'own_chat', detail: '5511900000000@c.us' };

  it('GOWS: a message we write to ourselves is skipped and counted, not a contact of the business', () => {
    expect(one('gows-own-chat')).toEqual({ ...OWN, event: 'message.any' });
  });

  it('WEBJS and NOWEB too, by our phone or by our LID', () => {
    const webjs = load('webjs-from-me') as any;
    webjs.payload.to = '5511900000000@c.us';
    webjs.payload._data.to = '5511900000000@c.us';
    webjs.payload._data.id.remote = '5511900000000@c.us';
    expect(parseWahaEvent(webjs)[0]).toMatchObject({ ...OWN });
    const noweb = load('noweb-text') as any;
    Object.assign(noweb.payload, { fromMe: true, from: '5511900000000@c.us', to: '90000000000001@lid' });
    Object.assign(noweb.payload._data.key, { fromMe: true, remoteJid: '90000000000001@lid' });
    expect(parseWahaEvent(noweb)[0]).toMatchObject({ ...OWN });
  });

  it('the ack, a reaction, an edit or a deletion of such a message is skipped too (its message was never stored)', () => {
    const ack = load('ack-read') as any;
    ack.payload.from = '5511900000000@c.us';
    expect(parseWahaEvent(ack)[0]).toMatchObject({ ...OWN, event: 'message.ack' });
    // As GOWS and NOWEB send it in a chat with one person: the chat (us) in `from`, `to` null —
    // by our phone or our LID. Before, it was an ack of a message never stored: retried, then
    // parked. Most likely our own chat, not certainly: skipped if its message is not stored.
    for (const [engine, from] of [['GOWS', '5511900000000@c.us'], ['NOWEB', '90000000000001@lid']]) {
      const alone = load('ack-read') as any;
      alone.environment.engine = engine;
      Object.assign(alone.payload, { from, to: null });
      expect(parseWahaEvent(alone)[0], engine).toMatchObject({ kind: 'status', status: 'read', ownChatIfMissing: true });
      // WEBJS, or an engine not said: us in `from` alone is no own chat (WEBJS names us there by
      // our LID on an ack of any chat).
      for (const other of ['WEBJS', undefined]) {
        alone.environment.engine = other;
        expect(parseWahaEvent(alone)[0], `${engine} as ${other}`).not.toHaveProperty('ownChatIfMissing');
      }
    }
    // Ours, as GOWS sends it: the chat (us) in `from`, `to` null.
    const reaction = load('webjs-reaction-add') as any;
    Object.assign(reaction, { engine: 'GOWS' });
    Object.assign(reaction.payload, { fromMe: true, from: '5511900000000@c.us', to: null });
    delete reaction.payload._data;
    expect(parseWahaEvent(reaction)[0]).toMatchObject({ ...OWN, event: 'message.reaction' });
    // WEBJS names the reactor in `from` (us, in any chat): alone, that is no own chat.
    Object.assign(reaction, { engine: 'WEBJS' });
    expect(parseWahaEvent(reaction)[0]).toMatchObject({ kind: 'reaction', fromMe: true });
    const revoke = load('gows-revoked') as any;
    Object.assign(revoke.payload.after, { fromMe: true, from: '5511900000000@c.us', to: '5511900000000@c.us' });
    Object.assign(revoke.payload.after._data.Info, { Chat: '5511900000000@s.whatsapp.net', IsFromMe: true });
    expect(parseWahaEvent(revoke)[0]).toMatchObject({ ...OWN, event: 'message.revoked' });
  });

  it('our messages, acks and reactions in a chat with a contact are not taken for it', () => {
    expect(one('gows-from-me-phone')).toMatchObject({ kind: 'message', contact: { phone: '+5511900000001' } });
    expect(one('ack-read')).toMatchObject({ kind: 'status' });
    const contactAlone = load('ack-read') as any;
    contactAlone.payload.to = null;
    expect(parseWahaEvent(contactAlone)[0]).toMatchObject({ kind: 'status', status: 'read' });
    expect(parseWahaEvent(contactAlone)[0]).not.toHaveProperty('ownChatIfMissing');
    // WEBJS may name us by our LID in `from` on an ack of a chat with a contact.
    const lidAck = load('webjs-ack-read') as any;
    lidAck.payload.from = '90000000000001@lid';
    expect(parseWahaEvent(lidAck)[0]).toMatchObject({ kind: 'status', status: 'read' });
    expect(one('webjs-reaction-add')).toMatchObject({ kind: 'reaction' });
  });
});
