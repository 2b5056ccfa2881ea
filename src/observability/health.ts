import type { Broker } from '../broker/broker.ts';
import type { Database } from '../db/database.ts';
import type { Logger } from './logger.ts';

export type ComponentState = { status: 'ok' | 'down'; error?: string };
export type Readiness = { status: 'ok' | 'unavailable'; components: Record<string, ComponentState> };

/** A reading younger than this is the answer to the next probes too. */
export const READINESS_REUSE_MS = 1000;

/**
 * Checks each dependency with a short deadline; the answer names every failing component. The
 * answer is public (probes carry no credential), so it says only that a component is unreachable
 * or slow; the driver's own words (hosts, users, databases) go to the log.
 */
export async function checkReadiness(db: Database, broker: Broker, timeoutMs = 2000, onDown?: (component: string, detail: string) => void): Promise<Readiness> {
  const probe = async (name: string, fn: () => Promise<void>): Promise<ComponentState> => {
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fn(),
        new Promise((_, rej) => {
          timer = setTimeout(() => {
            timedOut = true;
            rej(new Error(`did not answer within ${timeoutMs} ms`));
          }, timeoutMs);
          timer.unref();
        }),
      ]);
      return { status: 'ok' };
    } catch (err) {
      onDown?.(name, err instanceof Error ? err.message : String(err));
      return { status: 'down', error: timedOut ? `did not answer within ${timeoutMs} ms` : 'unreachable' };
    } finally {
      clearTimeout(timer);
    }
  };
  const [database, brokerState] = await Promise.all([probe('database', () => db.ping(timeoutMs)), probe('broker', () => broker.check())]);
  const components = { database, broker: brokerState };
  return { status: database.status === 'ok' && brokerState.status === 'ok' ? 'ok' : 'unavailable', components };
}

/**
 * Readiness as probes ask for it: one check at a time, its answer shared by every probe that asked
 * meanwhile and reused for READINESS_REUSE_MS — a flood of probes (or many load balancers) costs
 * one database ping and one broker check a second, not one each.
 */
export function sharedReadiness(db: Database, broker: Broker, logger?: Logger, timeoutMs = 2000): () => Promise<Readiness> {
  let last: { at: number; value: Readiness } | undefined;
  let running: Promise<Readiness> | undefined;
  // Why a component is down goes to the log when it goes down, then once a minute while it stays so.
  const logged = new Map<string, number>();
  const onDown = (component: string, detail: string) => {
    const at = logged.get(component);
    if (at !== undefined && Date.now() - at < 60_000) return;
    logged.set(component, Date.now());
    logger?.warn({ component, err: detail }, 'not ready: a component is down');
  };
  return () => {
    if (last && Date.now() - last.at < READINESS_REUSE_MS) return Promise.resolve(last.value);
    running ??= checkReadiness(db, broker, timeoutMs, onDown)
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
