// The `event` label of inbound_events_total comes from webhook bodies: it must stay a bounded set.
import { describe, expect, it } from 'vitest';
import { eventLabel, MAX_EVENT_LABELS } from '../../src/observability/metrics.ts';

describe('the event label of inbound_events_total', () => {
  it('keeps event names as they are, and turns what does not look like one into "other"', () => {
    for (const name of ['message', 'message.any', 'session.status', 'presence.update', 'statuses', 'group.v2.join']) expect(eventLabel(name)).toBe(name);
    for (const name of ['', 'Message', 'x'.repeat(41), 'a b', 'évent', '1message', 'message\n']) expect(eventLabel(name), JSON.stringify(name)).toBe('other');
  });

  it(`labels at most ${MAX_EVENT_LABELS} distinct names per process, however many a sender makes up`, () => {
    const labels = new Set(Array.from({ length: 1000 }, (_, i) => eventLabel(`made.up.${i}`)));
    expect(labels.size).toBeLessThanOrEqual(MAX_EVENT_LABELS + 1);
    expect(labels.has('other')).toBe(true);
    // Names seen before the cap keep their label, and the providers' own are never pushed out,
    // even those first seen after the cap was filled.
    expect(eventLabel('made.up.0')).toBe('made.up.0');
    expect(eventLabel('made.up.999')).toBe('other');
    for (const name of ['message.ack', 'statuses', 'call.received']) expect(eventLabel(name)).toBe(name);
  });
});
