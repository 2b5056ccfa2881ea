import { errorText, type Broker } from '../broker/broker.ts';
import { withDeadline } from '../deadline.ts';
import type { Database } from '../db/database.ts';
import type { Logger } from './logger.ts';

export type ComponentState = { status: 'ok' | 'down'; error?: string };
export type Readiness = { status: 'ok' | 'unavailable'; components: Record<string, ComponentState> };

/** How long each component's check may take before it counts as down. */
export const READINESS_TIMEOUT_MS = 2000;

/** A reading younger than this is the answer to the next probes too. */
export const READINESS_REUSE_MS = 1000;

/**
 * Checks each dependency with a short deadline; the answer names every failing component. The
 * answer is public (probes carry no credential), so it says only that a component is unreachable
 * or slow; the driver's own words (hosts, users, databases) go to the log.
 */
async function checkReadiness(db: Database, broker: Broker, timeoutMs: number, onDown: (component: string, detail: string) => void): Promise<Readiness> {
  const slow = `did not answer within ${timeoutMs} ms`;
  const probe = async (name: string, fn: () => Promise<void>): Promise<ComponentState> => {
    const timedOut = new Error(slow);
    try {
      await withDeadline(fn(), timeoutMs, () => timedOut);
      return { status: 'ok' };
    } catch (err) {
      onDown(name, errorText(err));
      return { status: 'down', error: err === timedOut ? slow : 'unreachable' };
    }
  };
  // The components' own deadlines a little later than ours: a hang is then told as one (theirs,
  // firing first, made it "unreachable").
  const own = timeoutMs + 250;
  const [database, brokerState] = await Promise.all([probe('database', () => db.ping(own)), probe('broker', () => broker.check(own))]);
  const components = { database, broker: brokerState };
  return { status: database.status === 'ok' && brokerState.status === 'ok' ? 'ok' : 'unavailable', components };
}

/**
 * Readiness as probes ask for it: one check at a time, its answer shared by every probe that asked
 * meanwhile and reused for READINESS_REUSE_MS — a flood of probes (or many load balancers) costs
 * one database ping and one broker check a second, not one each.
 */
export function sharedReadiness(db: Database, broker: Broker, logger: Logger): () => Promise<Readiness> {
  let last: { at: number; value: Readiness } | undefined;
  let running: Promise<Readiness> | undefined;
  // Why a component is down goes to the log when it goes down, then once a minute while it stays so.
  const logged = new Map<string, number>();
  const onDown = (component: string, detail: string) => {
    const at = logged.get(component);
    if (at !== undefined && Date.now() - at < 60_000) return;
    logged.set(component, Date.now());
    logger.warn({ component, err: detail }, 'not ready: a component is down');
  };
  return () => {
    if (last && Date.now() - last.at < READINESS_REUSE_MS) return Promise.resolve(last.value);
    running ??= checkReadiness(db, broker, READINESS_TIMEOUT_MS, onDown)
      .then((value) => {
        for (const [name, c] of Object.entries(value.components)) if (c.status === 'ok') logged.delete(name);
        last = { at: Date.now(), value };
        return value;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
}
