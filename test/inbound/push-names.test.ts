// A push name is what a person calls themselves in WhatsApp: it may become their contact's name, so
// it must be a name the API would take (not blank, at most 200 characters), whichever provider
// carried it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { InboundMessage } from '../../src/domain/inbound.ts';
import { MAX_NAME_LENGTH, isBlank, providedName } from '../../src/domain/text.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { parseCloudWebhook } from '../../src/inbound/whatsapp-cloud/cloud.parser.ts';

const load = (dir: string, name: string): any => JSON.parse(readFileSync(new URL(`../fixtures/${dir}/${name}.json`, import.meta.url), 'utf8'));
const BLANKS = ['', ' ', '\t\n', '\u200B', ' \u200B\u200C\u200D ', '\u00AD', '\u2060', '\u180E', '\u3000', '\uFEFF'];
// 199 letters and an emoji (two UTF-16 units) across the 200th character, then more.
const LONG = `${'a'.repeat(199)}😀${'b'.repeat(60)}`;

describe('the API and the inbound parsers mean the same by blank', () => {
  it('a push name may be as long as the API lets a name be', () => expect(MAX_NAME_LENGTH).toBe(200));

  it.each(BLANKS)('%j is blank', (s) => expect(isBlank(s)).toBe(true));
  it.each(['a', ' Ana ', '\u200BJo', '😀', '.'])('%j is not', (s) => expect(isBlank(s)).toBe(false));

  it('a provided name: none when blank, cut to 200 characters on a character boundary', () => {
    for (const s of BLANKS) expect(providedName(s)).toBeUndefined();
    expect(providedName(undefined)).toBeUndefined();
    // Past 200 invisible characters, what said something is cut off: none.
    expect(providedName(`${'\u200B'.repeat(200)}Ana`)).toBeUndefined();
    expect(providedName('Ana')).toBe('Ana');
    const cut = providedName(LONG)!;
    expect(cut).toBe(`${'a'.repeat(199)}😀`);
    expect([...cut]).toHaveLength(200);
    expect(providedName(`${'é'.repeat(200)}`)).toBe('é'.repeat(200));
    expect(providedName('😀'.repeat(250))).toBe('😀'.repeat(200));
  });
});

describe('WAHA push names', () => {
  const message = (name: string, patch: (body: any) => void) => {
    const body = load('waha', name);
    patch(body);
    return parseWahaEvent(body)[0] as InboundMessage;
  };

  it.each(BLANKS.filter(Boolean))('a blank push name (%j) is none, on every engine', (blank) => {
    expect(message('gows-text', (b) => { b.payload._data.Info.PushName = blank; }).pushName).toBeUndefined();
    expect(message('noweb-text', (b) => { b.payload._data.pushName = blank; }).pushName).toBeUndefined();
    expect(message('webjs-text', (b) => { b.payload._data.notifyName = blank; }).pushName).toBeUndefined();
  });

  it('a blank one is as if absent: the next place an engine may put it is read', () => {
    expect(message('noweb-text', (b) => { b.payload._data.Info = { PushName: ' \u200B' }; }).pushName).toBe('Luiza Alves');
  });

  it('an over-long one is cut to 200 characters, an emoji kept whole', () => {
    expect(message('gows-text', (b) => { b.payload._data.Info.PushName = LONG; }).pushName).toBe(`${'a'.repeat(199)}😀`);
    expect(message('webjs-text', (b) => { b.payload._data.notifyName = LONG; }).pushName).toBe(`${'a'.repeat(199)}😀`);
  });
});

describe('Cloud API push names', () => {
  const withName = (name: unknown) => {
    const body = load('whatsapp-cloud', 'text');
    body.entry[0].changes[0].value.contacts[0].profile.name = name;
    return parseCloudWebhook(body)[0] as InboundMessage;
  };

  it.each(BLANKS.filter(Boolean))('a blank profile name (%j) is none; the message is kept', (blank) => {
    const m = withName(blank);
    expect(m).toMatchObject({ kind: 'message', text: 'Oi! Vocês abrem no sábado?' });
    expect(m.pushName).toBeUndefined();
  });

  it('an over-long one is cut to 200 characters, an emoji kept whole', () => {
    expect(withName(LONG).pushName).toBe(`${'a'.repeat(199)}😀`);
  });
});
