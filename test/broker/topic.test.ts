import { describe, expect, it } from 'vitest';
import { retryDelayAfter, topicMatches, topicPatternToRegex } from '../../src/broker/broker.ts';

describe('topic patterns', () => {
  it.each([
    ['contact.*', 'contact.created', true],
    ['contact.*', 'contact.a.b', false],
    ['contact.*', 'contact', false],
    ['contact.*', 'message.received', false],
    ['contact.#', 'contact', true],
    ['contact.#', 'contact.a.b', true],
    ['#', 'anything.at.all', true],
    ['#', 'one', true],
    ['#.created', 'contact.created', true],
    ['#.created', 'created', true],
    ['*.created', 'contact.created', true],
    ['*.created', 'a.contact.created', false],
    ['message.received', 'message.received', true],
    ['message.received', 'message.receivedx', false],
    ['message.received', 'messageXreceived', false],
  ])('%s on %s → %s', (pattern, key, expected) => {
    expect(topicMatches(pattern, key)).toBe(expected);
  });

  it('escapes regex characters of literal words', () => {
    expect(topicMatches('a+b.c', 'a+b.c')).toBe(true);
    expect(topicMatches('a+b.c', 'aab.c')).toBe(false);
    expect(topicPatternToRegex('contact.*')).toBe('^\\.contact\\.[^.]+$');
  });

  it('gives one delay per retry, then none', () => {
    expect([1, 2, 3].map((a) => retryDelayAfter(a, [50, 100]))).toEqual([50, 100, undefined]);
  });
});
