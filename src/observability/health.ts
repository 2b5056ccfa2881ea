import type { Broker } from '../broker/broker.ts';
import type { Database } from '../db/database.ts';

export type Readiness = { status: 'ok' | 'unavailable'; components: Record<string, { status: 'ok' | 'down'; error?: string }> };

/** Checks each dependency with a short deadline; the answer names every failing component. */
export async function checkReadiness(db: Database, broker: Broker, timeoutMs = 2000): Promise<Readiness> {
  const probe = async (fn: () => Promise<void>) => {
    try {
      await Promise.race([fn(), new Promise((_, rej) => setTimeout(() => rej(new Error('timed out')), timeoutMs).unref())]);
      return { status: 'ok' as const };
    } catch (err) {
      return { status: 'down' as const, error: err instanceof Error ? err.message : String(err) };
    }
  };
  const [database, brokerState] = await Promise.all([probe(() => db.ping(timeoutMs)), probe(() => broker.check())]);
  const components = { database, broker: brokerState };
  return { status: database.status === 'ok' && brokerState.status === 'ok' ? 'ok' : 'unavailable', components };
}
