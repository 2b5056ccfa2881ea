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
  return db.transaction(async (tx) => {
    if (opts.projectId !== undefined) await enterTenant(tx, opts.projectId);
    return fn(tx);
  });
}

/** Switches the current transaction to the RLS-bound application role for one project. */
export async function enterTenant(tx: Queryable, projectId: string): Promise<void> {
  // One round trip: set_config('role', …, true) is SET LOCAL ROLE.
  await tx.query(`SELECT set_config('app.project_id', $1, true), set_config('role', '${APP_ROLE}', true)`, [projectId]);
}
