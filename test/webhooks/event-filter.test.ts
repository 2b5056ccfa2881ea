import { describe, expect, it } from 'vitest';
import { matchesEventFilter, validateEventFilters } from '../../src/domain/event-filter.ts';

const catalogue = ['contact.created', 'contact.updated', 'message.received', 'message.sent', 'session.ended'] as const;

describe('matchesEventFilter', () => {
  it('matches exact types', () => {
    expect(matchesEventFilter(['message.received'], 'message.received')).toBe(true);
    expect(matchesEventFilter(['message.received'], 'message.sent')).toBe(false);
  });

  it('matches a prefix wildcard on whole segments only', () => {
    expect(matchesEventFilter(['contact.*'], 'contact.created')).toBe(true);
    expect(matchesEventFilter(['contact.*'], 'contact.status_changed')).toBe(true);
    expect(matchesEventFilter(['contact.*'], 'contacts.created')).toBe(false);
    expect(matchesEventFilter(['contact.*'], 'contact')).toBe(false);
    expect(matchesEventFilter(['contact.*'], 'message.received')).toBe(false);
  });

  it('matches everything with *', () => {
    expect(matchesEventFilter(['*'], 'webhook.endpoint_disabled')).toBe(true);
  });

  it('matches when any filter does, and nothing with no filters', () => {
    expect(matchesEventFilter(['session.ended', 'contact.*'], 'contact.updated')).toBe(true);
    expect(matchesEventFilter([], 'contact.updated')).toBe(false);
  });

  it('does not treat other wildcard spellings as patterns', () => {
    expect(matchesEventFilter(['contact*'], 'contact.created')).toBe(false);
    expect(matchesEventFilter(['*.created'], 'contact.created')).toBe(false);
  });
});

describe('validateEventFilters', () => {
  it('accepts catalogue types, prefixes some type has, and *', () => {
    expect(validateEventFilters(['message.received', 'contact.*', '*'], catalogue)).toEqual([]);
    expect(validateEventFilters([], catalogue)).toEqual([]);
  });

  it('returns the unknown entries once each, in input order', () => {
    expect(
      validateEventFilters(
        ['message.recieved', 'contact.*', 'contacts.*', '*.created', 'contact*', '', 'message.recieved', 'Contact.created'],
        catalogue,
      ),
    ).toEqual(['message.recieved', 'contacts.*', '*.created', 'contact*', '', 'Contact.created']);
  });
});
