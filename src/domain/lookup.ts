// Lookup tables keyed by what comes from outside (a provider's field, a file name's extension).
/**
 * A lookup table keyed by what a provider sends: without a prototype, so a key such as
 * `constructor` or `toString` finds nothing rather than one of Object.prototype's functions.
 */
export function lookupTable<V>(entries: Record<string, V>): Readonly<Record<string, V | undefined>> {
  return Object.freeze(Object.assign(Object.create(null) as Record<string, V>, entries));
}
