import { describe, expect, it } from 'vitest';
import { parseHttpUrl, parseUrl } from '../src/url.ts';

describe('parseUrl', () => {
  it('reads an absolute URL and gives undefined for anything else', () => {
    expect(parseUrl('amqp://guest:guest@127.0.0.1:5672/')?.hostname).toBe('127.0.0.1');
    expect(parseUrl('http://waha.local/api/files/default/a.jpg?x=1')?.pathname).toBe('/api/files/default/a.jpg');
    for (const s of ['', 'not a url', '/relative/path', 'http://', 'http://[::1']) expect(parseUrl(s), s).toBeUndefined();
  });
});

describe('parseHttpUrl', () => {
  it('takes http and https only', () => {
    expect(parseHttpUrl('https://example.com/hooks')?.origin).toBe('https://example.com');
    expect(parseHttpUrl('HTTP://Example.com:80/')?.origin).toBe('http://example.com');
    for (const s of ['ftp://example.com/', 'file:///etc/passwd', 'javascript:alert(1)', 'data:text/plain,x', 'example.com']) expect(parseHttpUrl(s), s).toBeUndefined();
  });
});
