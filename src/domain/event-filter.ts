// Which event types a webhook subscription receives. A filter is an exact type
// (`message.received`), a prefix ending in `.*` (`contact.*`: every `contact.…` type), or `*`.

const PREFIX_RE = /^[a-z0-9_]+(?:\.[a-z0-9_]+)*\.\*$/;

export function matchesEventFilter(filters: readonly string[], type: string): boolean {
  return filters.some((filter) => {
    if (filter === '*' || filter === type) return true;
    // `contact.*` keeps its dot, so it does not match `contacts.created` nor `contact` itself.
    return filter.endsWith('.*') && type.startsWith(filter.slice(0, -1));
  });
}

/**
 * The entries that match nothing in the catalogue — a typo (`message.recieved`), a prefix no type
 * has (`contacts.*`), or a malformed wildcard (`*.created`, `contact*`) — in input order, each
 * once. Empty means every filter is valid. Checking against the catalogue rather than a pattern
 * lets a subscriber learn about a typo when saving, not after days of silence.
 */
export function validateEventFilters(filters: readonly string[], catalogue: readonly string[]): string[] {
  const known = new Set(catalogue);
  const unknown = new Set<string>();
  for (const filter of filters) {
    if (filter === '*' || known.has(filter)) continue;
    if (PREFIX_RE.test(filter)) {
      const prefix = filter.slice(0, -1);
      if (catalogue.some((type) => type.startsWith(prefix))) continue;
    }
    unknown.add(filter);
  }
  return [...unknown];
}
