// Brazilian mobile numbers for tests, without the `+` (as WAHA's JIDs carry them): distinct within
// a test process, and random across processes, so that files running at once do not share a contact.
import { randomInt } from 'node:crypto';

const given = new Set<string>();

/** `55` + the area code + `9` + eight digits; e.g. `5521987654321`. */
export function newPhone(area = '21'): string {
  for (;;) {
    const phone = `55${area}9${String(randomInt(0, 100_000_000)).padStart(8, '0')}`;
    if (given.has(phone)) continue;
    given.add(phone);
    return phone;
  }
}
