import { isUuid } from '../domain/ids.ts';
import type { Database, Queryable } from './database.ts';

export type TxOptions = {
  /**
   * When set, the transaction runs as the application role with `app.project_id` set, so
   * row-level security policies on tenant tables apply (the second wall behind query filters).
   */
  projectId?: string;
};

export const APP_ROLE = 'ventros_app';

/** The one way to open a transaction. Every write goes through here. */
export function withTransaction<T>(
  db: Database,
  fn: (tx: Queryable) => Promise<T>,
  opts: TxOptions = {},
): Promise<T> {
  if (opts.projectId === undefined) return db.transaction(fn);
  // The tenant is entered in BEGIN's own round trip, so the id goes into the SQL text: only a
  // well-formed UUID may (anything else would be a bug upstream, never user text).
  if (!isUuid(opts.projectId)) return Promise.reject(new Error(`withTransaction: project id is not a UUID: ${JSON.stringify(opts.projectId).slice(0, 80)}`));
  return db.transaction(fn, tenantSetup(opts.projectId));
}

/** SQL that switches the current transaction to the RLS-bound role for one (validated) project. */
function tenantSetup(projectId: string): string {
  return `SELECT set_config('app.project_id', '${projectId}', true), set_config('role', '${APP_ROLE}', true)`;
}
