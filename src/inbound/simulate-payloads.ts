// Realistic WAHA webhooks for `ventros simulate`, the benchmarks and the load tests: the three
// engines' envelopes and `_data` shapes (as in test/fixtures/waha), a mix of message types, our
// own messages and their acks, from a pool of contacts. Every message has a fresh id. Messages come
// as `message.any`, the event a channel set up by Ventros subscribes to (waha-webhook-setup.ts).
// A WAHA session runs one engine: each contact here keeps one (they take turns, so the mix of
// engines stays even), and an ack or a reaction comes in the engine of the message it is about.
import { randomBytes } from 'node:crypto';

export type Engine = 'GOWS' | 'NOWEB' | 'WEBJS';
const ENGINES: readonly Engine[] = ['GOWS', 'NOWEB', 'WEBJS'];

export type GeneratorOptions = {
  /** Size of the contact pool (distinct phone numbers). */
  contacts?: number;
  /** Only new messages (no acks or reactions), e.g. to count stored rows exactly. */
  messagesOnly?: boolean;
  session?: string;
  /** Unix milliseconds of "now" (tests fix it). */
  now?: () => number;
};

export type Generated = { body: Record<string, unknown>; kind: string; messageId?: string };

const ME = '5511900000000';
const NAMES = ['Joana Prado', 'Carlos Lima', 'Paulo Reis', 'Luiza Alves', 'Rafa', 'Vera', 'Tiago Nunes', 'Otávio Melo'];
const TEXTS = ['Oi! Vocês abrem no sábado?', 'Qual o prazo de entrega?', 'Tem em azul?', 'Obrigado!', 'Preciso trocar um produto', 'Ok 👍'];

// [kind, weight]
const MIX: Array<[string, number]> = [
  ['text', 50], ['image', 10], ['voice', 8], ['document', 5], ['location', 5], ['contact', 2], ['from_me', 10], ['ack', 7], ['reaction', 3],
];

export function makeWahaGenerator(opts: GeneratorOptions = {}) {
  const contacts = Math.max(1, opts.contacts ?? 200);
  const now = opts.now ?? Date.now;
  const session = opts.session ?? 'default';
  const mix = opts.messagesOnly ? MIX.filter(([k]) => k !== 'ack' && k !== 'reaction') : MIX;
  const total = mix.reduce((a, [, w]) => a + w, 0);
  // Our recent messages (acks and reactions point at them).
  const ours: Array<{ id: string; phone: string; engine: Engine }> = [];
  let n = 0;

  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)];
  const phoneOf = (i: number) => `5511${String(970000000 + i).padStart(9, '0')}`;
  const newId = () => `3EB0${randomBytes(8).toString('hex').toUpperCase()}`;

  function envelope(engine: Engine, event: string, payload: Record<string, unknown>): Record<string, unknown> {
    return {
      id: `evt_${randomBytes(10).toString('hex')}`,
      timestamp: now(),
      event,
      session,
      metadata: {},
      me: { id: `${ME}@c.us`, pushName: 'Loja' },
      payload,
      engine,
      environment: { version: '2025.9.5', engine, tier: 'PLUS', browser: null },
    };
  }

  function message(kind: string, engine: Engine, phone: string, fromMe: boolean): Generated {
    const id = newId();
    const seconds = Math.floor(now() / 1000);
    const chat = `${phone}@c.us`;
    const serialized = `${fromMe}_${chat}_${id}`;
    const text = kind === 'text' || kind === 'from_me' ? pick(TEXTS) : kind === 'image' ? 'Olha essa foto' : '';
    const file = (ext: string, mimetype: string, filename: string | null = null) => ({ url: `http://waha.local/api/files/${session}/${id}.${ext}`, mimetype, filename });
    const media = kind === 'image' ? file('jpeg', 'image/jpeg') : kind === 'voice' ? file('oga', 'audio/ogg; codecs=opus') : kind === 'document' ? file('pdf', 'application/pdf', 'pedido.pdf') : null;
    const proto: Record<string, unknown> =
      kind === 'image' ? { imageMessage: { mimetype: 'image/jpeg', caption: text } }
      : kind === 'voice' ? { audioMessage: { mimetype: 'audio/ogg; codecs=opus', PTT: true, ptt: true } }
      : kind === 'document' ? { documentMessage: { mimetype: 'application/pdf', fileName: 'pedido.pdf' } }
      : kind === 'location' ? { locationMessage: { degreesLatitude: -23.56, degreesLongitude: -46.65 } }
      : kind === 'contact' ? { contactMessage: { displayName: 'Marta', vcard: 'BEGIN:VCARD\nVERSION:3.0\nFN:Marta\nEND:VCARD' } }
      : { conversation: text };
    // A person keeps their name: a new push name on every message would be a contact update each time.
    const pushName = `${NAMES[Number(phone.slice(-3)) % NAMES.length]} ${phone.slice(-3)}`;
    const payload: Record<string, unknown> = {
      id: engine === 'GOWS' && !fromMe ? id : serialized,
      timestamp: seconds,
      from: fromMe ? `${ME}@c.us` : chat,
      to: fromMe ? chat : `${ME}@c.us`,
      fromMe,
      source: 'app',
      body: text,
      hasMedia: media !== null,
      media,
      ...(kind === 'location' ? { location: { latitude: -23.56, longitude: -46.65 } } : {}),
      ...(kind === 'contact' ? { vCards: ['BEGIN:VCARD\nVERSION:3.0\nFN:Marta\nEND:VCARD'] } : {}),
      ...(fromMe ? { ack: 1, ackName: 'SERVER' } : {}),
    };
    if (engine === 'GOWS') {
      payload._data = {
        Info: { Chat: `${phone}@s.whatsapp.net`, Sender: `${fromMe ? ME : phone}@s.whatsapp.net`, IsFromMe: fromMe, IsGroup: false, ID: id, PushName: fromMe ? 'Loja' : pushName },
        Message: proto,
      };
    } else if (engine === 'NOWEB') {
      payload._data = { key: { remoteJid: `${phone}@s.whatsapp.net`, fromMe, id }, messageTimestamp: seconds, pushName: fromMe ? 'Loja' : pushName, message: proto };
    } else {
      const webType = { text: 'chat', from_me: 'chat', image: 'image', voice: 'ptt', document: 'document', location: 'location', contact: 'vcard' }[kind] ?? 'chat';
      payload._data = { id: { fromMe, remote: chat, id, _serialized: serialized }, type: webType, t: seconds, notifyName: fromMe ? undefined : pushName, from: payload.from, to: payload.to };
    }
    if (fromMe) {
      ours.push({ id: serialized, phone, engine });
      if (ours.length > 500) ours.shift();
    }
    return { body: envelope(engine, 'message.any', payload), kind, messageId: id };
  }

  return {
    next(): Generated {
      n++;
      let r = Math.random() * total;
      let kind = mix[0][0];
      for (const [k, w] of mix) {
        if ((r -= w) < 0) {
          kind = k;
          break;
        }
      }
      const contact = n % contacts;
      const engine = ENGINES[contact % ENGINES.length];
      const phone = phoneOf(contact);
      if ((kind === 'ack' || kind === 'reaction') && ours.length === 0) kind = 'text';
      if (kind === 'ack') {
        const target = pick(ours);
        const code = pick([2, 3]);
        return {
          kind,
          body: envelope(target.engine, 'message.ack', { id: target.id, from: `${target.phone}@c.us`, to: `${ME}@c.us`, fromMe: true, ack: code, ackName: code === 2 ? 'DEVICE' : 'READ' }),
        };
      }
      if (kind === 'reaction') {
        const target = pick(ours);
        return {
          kind,
          body: envelope(target.engine, 'message.reaction', {
            id: `false_${target.phone}@c.us_${newId()}`, from: `${target.phone}@c.us`, to: `${ME}@c.us`, fromMe: false,
            timestamp: Math.floor(now() / 1000), reaction: { text: pick(['👍', '❤️', '😂']), messageId: target.id },
          }),
        };
      }
      return message(kind, engine, phone, kind === 'from_me');
    },
  };
}
