// The media type of a reply, when the caller gave none: guessed from the file name or the URL's
// path, else the type's usual one. The extension is the caller's text, looked up safely.
import { describe, expect, it } from 'vitest';
import { mimetypeOf } from '../../src/channels/sender.ts';

const media = (o: { url?: string; mimetype?: string; filename?: string }) => ({ url: o.url ?? 'https://cdn.example.com/f', mimetype: o.mimetype ?? null, filename: o.filename ?? null });

describe('mimetypeOf', () => {
  it('keeps the type given, else guesses from the file name, then the URL, then the message type', () => {
    expect(mimetypeOf('document', media({ mimetype: 'text/csv', filename: 'a.pdf' }))).toBe('text/csv');
    expect(mimetypeOf('document', media({ filename: 'Relatório.PDF' }))).toBe('application/pdf');
    expect(mimetypeOf('image', media({ url: 'https://cdn.example.com/p/photo.png?size=2' }))).toBe('image/png');
    expect(mimetypeOf('image', media({}))).toBe('image/jpeg');
  });

  it("finds nothing for an extension named like one of Object.prototype's members", () => {
    for (const ext of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      expect(mimetypeOf('document', media({ filename: `file.${ext}` }))).toBe('application/octet-stream');
    }
  });
});
