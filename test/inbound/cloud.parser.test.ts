import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { InboundEvent, InboundMessage } from '../../src/domain/inbound.ts';
import { parseCloudWebhook } from '../../src/inbound/whatsapp-cloud/cloud.parser.ts';

const DIR = new URL('../fixtures/whatsapp-cloud/', import.meta.url);
const load = (name: string): any => JSON.parse(readFileSync(new URL(`${name}.json`, DIR), 'utf8'));
const one = (name: string): InboundEvent => {
  const events = parseCloudWebhook(load(name));
  expect(events).toHaveLength(1);
  return events[0];
};
const at = (seconds: number) => new Date(seconds * 1000);
const META = { event: 'messages', phone_number_id: '200000000000001', display_phone_number: '5511900000000', waba_id: '100000000000001' };
const JOANA = { phone: '+5511900000001', waId: '5511900000001' };
const CARLOS = { phone: '+5511900000002', waId: '5511900000002' };

// Fills what every Cloud message has in common, so each test states what is particular.
function cloudMessage(m: Partial<InboundMessage> & Pick<InboundMessage, 'externalId' | 'contact' | 'type' | 'timestamp'>, rawType: string): InboundMessage {
  return {
    kind: 'message', provider: 'whatsapp_cloud', event: 'messages', messageKey: m.externalId, fromMe: false,
    ...m, metadata: { ...META, raw_type: rawType, ...m.metadata },
  };
}

// Every fixture file must be listed here with how many events it yields, so none goes unchecked.
const EXPECTED: Record<string, string[]> = {
  'ad-referral': ['message'], audio: ['message'], button: ['message'], contacts: ['message'], document: ['message'],
  'image-caption': ['message'], 'interactive-button-reply': ['message'], 'interactive-list-reply': ['message'],
  location: ['message'], 'multi-entry': ['message', 'status', 'ignored', 'message'], 'other-phone-number': ['message', 'message'],
  'reaction-removed': ['reaction'],
  reaction: ['reaction'], 'status-sent': ['status'], statuses: ['status', 'status', 'status'], sticker: ['message'],
  text: ['message'], 'two-messages-one-post': ['message', 'message'], unsupported: ['message'], video: ['message'],
  voice: ['message'],
};

describe('Cloud API fixtures', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();

  it('lists every fixture file with its expected outcome', () => {
    expect(files).toEqual(Object.keys(EXPECTED).sort());
  });

  it.each(files)('%s yields the expected events in order', (name) => {
    const events = parseCloudWebhook(load(name));
    expect(events.map((e) => e.kind)).toEqual(EXPECTED[name]);
    for (const e of events) expect(e.provider).toBe('whatsapp_cloud');
  });
});

describe('Cloud API messages', () => {
  it('text: contact from wa_id, push name from profile.name, string seconds as time', () => {
    expect(one('text')).toEqual(cloudMessage({
      externalId: 'wamid.DEV0000000000000000000000000TEXT01', contact: JOANA, pushName: 'Joana Prado',
      type: 'text', text: 'Oi! Vocês abrem no sábado?', timestamp: at(1764460800),
    }, 'text'));
  });

  it('image: caption as text; media as id + mimetype + sha256, no url', () => {
    expect(one('image-caption')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000IMG01', contact: JOANA, pushName: 'Joana Prado', type: 'image',
      text: 'Esse modelo tem em azul?', timestamp: at(1764460860),
      media: { mediaId: '300000000000001', mimetype: 'image/jpeg', sha256: 'ZmFrZS1zaGEtMjU2' },
    }, 'image'));
  });

  it('video with caption', () => {
    expect(one('video')).toMatchObject({
      type: 'video', text: 'Olha o defeito na costura',
      media: { mediaId: '300000000000002', mimetype: 'video/mp4', sha256: 'ZmFrZS1zaGEtdmlkZW8=' },
    });
  });

  it('audio is audio; audio with voice=true is a voice note', () => {
    expect(one('audio')).toMatchObject({ type: 'audio', media: { mediaId: '300000000000003', mimetype: 'audio/mpeg' }, metadata: { raw_type: 'audio' } });
    expect(one('voice')).toMatchObject({ type: 'voice', media: { mediaId: '300000000000004', mimetype: 'audio/ogg; codecs=opus' }, metadata: { raw_type: 'audio' } });
    expect((one('voice') as InboundMessage).text).toBeUndefined();
  });

  it('document keeps filename and caption', () => {
    expect(one('document')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000DOC01', contact: CARLOS, pushName: 'Carlos Lima', type: 'document',
      text: 'Segue o orçamento', timestamp: at(1764460979),
      media: { mediaId: '300000000000005', mimetype: 'application/pdf', sha256: 'ZmFrZS1zaGEtZG9j', filename: 'orcamento-novembro.pdf' },
    }, 'document'));
  });

  it('sticker', () => {
    expect(one('sticker')).toMatchObject({ type: 'sticker', media: { mediaId: '300000000000006', mimetype: 'image/webp' } });
  });

  it('location keeps name and address', () => {
    expect(one('location')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000LOC02', contact: CARLOS, pushName: 'Carlos Lima', type: 'location',
      timestamp: at(1764461041), location: { latitude: -22.9068, longitude: -43.1729, name: 'Loja Centro', address: 'Rua da Assembleia, 10' },
    }, 'location'));
  });

  it('contacts become vCards, like the ones WAHA delivers', () => {
    const m = one('contacts') as InboundMessage;
    expect(m.type).toBe('contact');
    expect(m.contactCard).toEqual({
      displayName: 'Marta Souza',
      vcards: ['BEGIN:VCARD\nVERSION:3.0\nN:Souza;Marta;;;\nFN:Marta Souza\nORG:Souza\\, Filhos & Cia\n' +
        'TEL;type=CELL;waid=5511900000009:+55 11 90000-0009\nEMAIL;type=WORK:marta@example.com\nEND:VCARD'],
    });
  });

  it("keeps the rest of Meta's contact card: middle name, prefix, suffix, department, title, birthday, addresses, URLs", () => {
    const body = load('contacts');
    Object.assign(body.entry[0].changes[0].value.messages[0].contacts[0], {
      name: { formatted_name: 'Dra. Marta R. Souza Jr.', first_name: 'Marta', middle_name: 'R.', last_name: 'Souza', prefix: 'Dra.', suffix: 'Jr.' },
      org: { company: 'Souza, Filhos & Cia', department: 'Vendas', title: 'Gerente' },
      birthday: '1990-04-01',
      addresses: [{ street: 'Rua das Flores, 10', city: 'São Paulo', state: 'SP', zip: '01000-000', country: 'Brasil', country_code: 'BR', type: 'WORK' }],
      urls: [{ url: 'https://souza.example.com', type: 'WORK' }],
    });
    const [vcard] = (parseCloudWebhook(body)[0] as InboundMessage).contactCard!.vcards;
    expect(vcard.split('\n')).toEqual([
      'BEGIN:VCARD', 'VERSION:3.0', 'N:Souza;Marta;R.;Dra.;Jr.', 'FN:Dra. Marta R. Souza Jr.', 'ORG:Souza\\, Filhos & Cia;Vendas', 'TITLE:Gerente',
      'BDAY:1990-04-01', 'TEL;type=CELL;waid=5511900000009:+55 11 90000-0009', 'EMAIL;type=WORK:marta@example.com',
      'ADR;type=WORK:;;Rua das Flores\\, 10;São Paulo;SP;01000-000;Brasil', 'URL;type=WORK:https://souza.example.com', 'END:VCARD',
    ]);
  });

  it('interactive button_reply: the title is the text, the id goes to metadata, context.id is the reply target', () => {
    expect(one('interactive-button-reply')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000BTN02', contact: JOANA, pushName: 'Joana Prado', type: 'interactive',
      text: 'Remarcar', timestamp: at(1764461400),
      replyToExternalId: 'wamid.DEV0000000000000000000000000OUT003', replyToKey: 'wamid.DEV0000000000000000000000000OUT003',
      metadata: { event: 'messages', interactive_type: 'button_reply', reply_id: 'reschedule' },
    }, 'interactive'));
  });

  it('interactive list_reply keeps the row id and description', () => {
    expect(one('interactive-list-reply')).toMatchObject({
      type: 'interactive', text: 'Sábado 10h', replyToExternalId: 'wamid.DEV0000000000000000000000000OUT004',
      metadata: { interactive_type: 'list_reply', reply_id: 'slot_sat_10', reply_description: 'Loja Paulista' },
    });
  });

  it('button (template quick reply): text is the button text, payload in metadata', () => {
    expect(one('button')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000TPL01', contact: { phone: '+5511900000016', waId: '5511900000016' },
      pushName: 'Helena Costa', type: 'button', text: 'Confirmar pedido', timestamp: at(1764461440),
      replyToExternalId: 'wamid.DEV0000000000000000000000000OUT005', replyToKey: 'wamid.DEV0000000000000000000000000OUT005',
      metadata: { event: 'messages', button_payload: 'CONFIRM_ORDER_1234' },
    }, 'button'));
  });

  it('reaction → kind reaction on the target message; no emoji means removed', () => {
    expect(one('reaction')).toEqual({
      kind: 'reaction', provider: 'whatsapp_cloud', event: 'messages', externalId: 'wamid.DEV00000000000000000000000000RCT01',
      targetExternalId: 'wamid.DEV0000000000000000000000000OUT001', targetKey: 'wamid.DEV0000000000000000000000000OUT001',
      emoji: '❤️', fromMe: false, contact: JOANA, timestamp: at(1764461460),
    });
    expect(one('reaction-removed')).toMatchObject({ kind: 'reaction', emoji: '', targetKey: 'wamid.DEV0000000000000000000000000OUT001' });
  });

  it('an unsupported type is kept as unknown with its raw type and Meta\'s error', () => {
    expect(one('unsupported')).toEqual(cloudMessage({
      externalId: 'wamid.DEV00000000000000000000000000UNS01', contact: { phone: '+5511900000017', waId: '5511900000017' },
      pushName: 'Igor Ramos', type: 'unknown', timestamp: at(1764461480),
      metadata: { event: 'messages', errors: [{ code: 131051, title: 'Message type unknown', message: 'Message type unknown', details: 'Message type is currently not supported.' }] },
    }, 'unsupported'));
  });

  it("keeps the kind Meta names of an unsupported message (a customer's edit)", () => {
    const body = load('unsupported');
    body.entry[0].changes[0].value.messages[0].unsupported = { type: 'edit' };
    expect(parseCloudWebhook(body)[0]).toMatchObject({ type: 'unknown', metadata: { raw_type: 'unsupported', unsupported_type: 'edit', errors: [expect.objectContaining({ code: 131051 })] } });
  });

  it.each(['order', 'system', 'request_welcome', 'some_future_type'])('type %s is kept as unknown', (type) => {
    const body = load('text');
    Object.assign(body.entry[0].changes[0].value.messages[0], { type, text: undefined });
    expect(parseCloudWebhook(body)[0]).toMatchObject({ kind: 'message', type: 'unknown', metadata: { raw_type: type } });
  });

  it('referral → ad attribution in snake_case', () => {
    expect((one('ad-referral') as InboundMessage).ad).toEqual({
      source_type: 'ad', source_id: '120200000000000001', source_url: 'https://fb.me/FAKEAD01', ctwa_clid: 'FAKE-CTWA-CLID-0002',
      headline: 'BLACK FRIDAY LOJA EXEMPLO', body: 'Até 50% em toda a loja.', media_type: 'image', media_url: 'https://scontent.example/fake.jpg',
    });
    expect((one('text') as InboundMessage).ad).toBeUndefined();
  });

  it('an empty or partial referral names no ad: not an ad click; any one of source id, source URL or click id does', () => {
    const withReferral = (referral: unknown) => {
      const body = load('ad-referral');
      body.entry[0].changes[0].value.messages[0].referral = referral;
      return parseCloudWebhook(body)[0] as InboundMessage;
    };
    expect(withReferral({}).ad).toBeUndefined();
    expect(withReferral({ source_type: 'ad', headline: 'Promoção', body: 'x', media_type: 'image', image_url: 'https://scontent.example/a.jpg' }).ad).toBeUndefined();
    expect(withReferral({ source_id: '', source_url: '', ctwa_clid: '' }).ad).toBeUndefined();
    expect(withReferral({ source_id: '120200000000000009' }).ad).toEqual({ source_id: '120200000000000009' });
    expect(withReferral({ source_url: 'https://fb.me/X' }).ad).toEqual({ source_url: 'https://fb.me/X' });
    expect(withReferral({ ctwa_clid: 'CLID' }).ad).toEqual({ ctwa_clid: 'CLID' });
    // The message itself is kept either way.
    expect(withReferral({})).toMatchObject({ kind: 'message', type: 'text' });
  });

  it('two messages in one POST: each one, with its own content', () => {
    const [loc, btn] = parseCloudWebhook(load('two-messages-one-post')) as InboundMessage[];
    expect(loc).toMatchObject({ type: 'location', location: { latitude: -23.5613, longitude: -46.6565, name: 'Loja Paulista', address: 'Av. Paulista, 1000' } });
    expect(btn).toMatchObject({ type: 'interactive', text: 'Confirmar', replyToExternalId: 'wamid.DEV0000000000000000000000000OUT001', metadata: { reply_id: 'confirm' } });
    expect([loc.pushName, btn.pushName]).toEqual(['Carlos Lima', 'Carlos Lima']);
  });

  it('the push name comes from the contacts entry whose wa_id matches the sender', () => {
    const body = load('text');
    body.entry[0].changes[0].value.contacts = [{ profile: { name: 'Outra Pessoa' }, wa_id: '5511900000099' }, { profile: { name: 'Joana P.' }, wa_id: '5511900000001' }];
    expect(parseCloudWebhook(body)[0]).toMatchObject({ pushName: 'Joana P.' });
  });

  it("never takes a lone contacts entry naming someone else as the sender's name; one without a wa_id it does", () => {
    const body = load('text');
    body.entry[0].changes[0].value.contacts = [{ profile: { name: 'Outra Pessoa' }, wa_id: '5511900000099' }];
    expect((parseCloudWebhook(body)[0] as InboundMessage).pushName).toBeUndefined();
    body.entry[0].changes[0].value.contacts = [{ profile: { name: 'Sem Id' } }];
    expect(parseCloudWebhook(body)[0]).toMatchObject({ pushName: 'Sem Id' });
  });

  const withMessage = (patch: Record<string, unknown>) => {
    const body = load('text');
    const m = body.entry[0].changes[0].value.messages[0];
    delete m.text;
    Object.assign(m, patch);
    return parseCloudWebhook(body)[0] as InboundMessage;
  };

  it('a WhatsApp Flow reply keeps the words the customer saw and the answers, as a document', () => {
    const m = withMessage({ type: 'interactive', interactive: { type: 'nfm_reply', nfm_reply: { name: 'flow', body: 'Sent', response_json: '{"flow_token":"t1","pedido":"pizza","tamanho":"G"}' } } });
    expect(m).toMatchObject({ type: 'interactive', text: 'Sent', metadata: { interactive_type: 'nfm_reply', flow_name: 'flow', flow_response: { flow_token: 't1', pedido: 'pizza', tamanho: 'G' } } });
    const notJson = withMessage({ type: 'interactive', interactive: { type: 'nfm_reply', nfm_reply: { body: 'Sent', response_json: 'not json' } } });
    expect(notJson.metadata).toMatchObject({ flow_response: 'not json' });
  });

  it('an order keeps its text and what was ordered; a system notice its words and the new number', () => {
    const items = [{ product_retailer_id: 'pizza-g', quantity: 2, item_price: 59.9, currency: 'BRL' }];
    expect(withMessage({ type: 'order', order: { catalog_id: 'cat1', text: 'para hoje', product_items: items } })).toMatchObject({
      type: 'unknown', text: 'para hoje', metadata: { raw_type: 'order', order: { catalog_id: 'cat1', product_items: items } },
    });
    expect(withMessage({ type: 'system', system: { body: 'Joana changed from 5511900000001 to 5511900000077', new_wa_id: '5511900000077', type: 'user_changed_number' } })).toMatchObject({
      type: 'unknown', text: 'Joana changed from 5511900000001 to 5511900000077', metadata: { raw_type: 'system', system: { type: 'user_changed_number', new_wa_id: '5511900000077' } },
    });
  });
});
