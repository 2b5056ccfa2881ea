// Queries on `login_attempts`: the sliding-window throttle of password logins (global table).
import type { Queryable } from './database.ts';

export type AttemptCounts = {
  byEmail: number;
  byIp: number;
  /** Seconds until the oldest attempt of each kind leaves the window. */
  emailRetryAfter: number;
  ipRetryAfter: number;
};

/**
 * Records an attempt BEFORE the password is checked and returns the counts including it, so
 * parallel guesses cannot all slip past a check-then-record gap. The caller deletes the row when
 * the attempt turns out to be refused (429) or succeeds.
 */
export async function recordAttempt(q: Queryable, email: string, ip: string, windowMs: number): Promise<{ id: number } & AttemptCounts> {
  const ins = await q.query<{ id: number }>('INSERT INTO login_attempts (email, ip) VALUES ($1, $2) RETURNING id', [email, ip]);
  // An address's registrations (REGISTRATION, below) are counted apart from its logins.
  const r = await q.query(
    `SELECT count(*) FILTER (WHERE email = $1)::int AS by_email,
            count(*) FILTER (WHERE ip = $2)::int AS by_ip,
            ceil(extract(epoch FROM min(created_at) FILTER (WHERE email = $1) + $3::float8 * interval '1 ms' - now()))::int AS email_retry,
            ceil(extract(epoch FROM min(created_at) FILTER (WHERE ip = $2) + $3::float8 * interval '1 ms' - now()))::int AS ip_retry
     FROM login_attempts
     WHERE (email = $1 OR ip = $2) AND email <> ALL($4::text[]) AND created_at > now() - $3::float8 * interval '1 ms'`,
    [email, ip, windowMs, [REGISTRATION, MEMBER_LOOKUP]],
  );
  const c = r.rows[0];
  return {
    id: Number(ins.rows[0].id),
    byEmail: c.by_email,
    byIp: c.by_ip,
    emailRetryAfter: Math.max(1, c.email_retry ?? 1),
    ipRetryAfter: Math.max(1, c.ip_retry ?? 1),
  };
}

/** The emails a registration and a member lookup are recorded under: no address is either (they are no email). */
const REGISTRATION = '(registration)';
const MEMBER_LOOKUP = '(member lookup)';

const PER_IP_KINDS = { registration: REGISTRATION, member_lookup: MEMBER_LOOKUP } as const;

/**
 * Counts one registration, or one lookup of a person by email to add them to a project (which
 * tells a registered email from an unknown one, as a registration does), from `ip`, each kind
 * apart; they share the login table and its pruning, and the login counts leave them out. Past
 * `limit` within the window the count is taken back and the answer is the seconds until the
 * oldest leaves it (the caller's 429); within it, undefined.
 */
export async function overLimitPerIp(q: Queryable, kind: keyof typeof PER_IP_KINDS, ip: string, limit: number, windowMs: number): Promise<number | undefined> {
  const ins = await q.query<{ id: number }>('INSERT INTO login_attempts (email, ip) VALUES ($1, $2) RETURNING id', [PER_IP_KINDS[kind], ip]);
  const r = await q.query(
    `SELECT count(*)::int AS n, ceil(extract(epoch FROM min(created_at) + $3::float8 * interval '1 ms' - now()))::int AS retry
     FROM login_attempts WHERE ip = $2 AND email = $1 AND created_at > now() - $3::float8 * interval '1 ms'`,
    [PER_IP_KINDS[kind], ip, windowMs],
  );
  if (r.rows[0].n > limit) {
    await deleteAttempt(q, Number(ins.rows[0].id));
    return Math.max(1, r.rows[0].retry ?? 1);
  }
  await pruneLoginAttempts(q, windowMs);
  return undefined;
}

export async function deleteAttempt(q: Queryable, id: number): Promise<void> {
  await q.query('DELETE FROM login_attempts WHERE id = $1', [id]);
}

/** A successful login forgives the email's earlier failures (not the address's). */
export async function clearEmailAttempts(q: Queryable, email: string): Promise<void> {
  await q.query('DELETE FROM login_attempts WHERE email = $1', [email]);
}

/** Drops attempts that left the window; called on the failure path so the table stays small. */
export async function pruneLoginAttempts(q: Queryable, windowMs: number): Promise<void> {
  await q.query(`DELETE FROM login_attempts WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)`, [windowMs]);
}
