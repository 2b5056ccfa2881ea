// Accounts: registration, password login (throttled), login tokens and "who am I".
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { findApiKey, insertApiKey, type ApiKeyRecord } from '../db/api-keys.sql.ts';
import { findActiveAuthToken, insertAuthToken, insertLoginToken, revokeAuthToken, revokeUserTokens } from '../db/auth-tokens.sql.ts';
import { clearEmailAttempts, deleteAttempt, overLimitPerIp, pruneLoginAttempts, recordAttempt } from '../db/login-attempts.sql.ts';
import { findMembership } from '../db/project-members.sql.ts';
import { findProject, listProjectsOfUser, type ProjectRecord, type ProjectWithRole } from '../db/projects.sql.ts';
import { changePasswordHash, findUser, findUserWithPassword, insertUser, replacePasswordHash, type UserRecord, type UserWithPassword } from '../db/users.sql.ts';
import {
  API_KEY_PREFIX,
  LOGIN_TOKEN_PREFIX,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  decoyPasswordHash,
  displayPrefix,
  hashPassword,
  needsRehash,
  newSecret,
  normaliseEmail,
  secretHash,
  verifyPassword,
} from '../domain/credentials.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import type { Caller } from '../domain/permissions.ts';
import { AppError, invalid, notFound, rateLimited } from '../errors.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { createProjectRecords } from './projects.service.ts';

/**
 * Failed logins allowed per email and per client address within the window, then 429; and
 * registrations per client address within the same window (each costs a password hash and
 * creates a user, a project and a key).
 */
export type LoginLimits = { perEmail: number; perIp: number; windowMs: number; registrationsPerIp: number };
export const DEFAULT_LOGIN_LIMITS: LoginLimits = { perEmail: 5, perIp: 50, windowMs: 15 * 60_000, registrationsPerIp: 30 };

export type Registration = { user: UserRecord; project: ProjectWithRole; apiKey: ApiKeyRecord & { key: string } };
export type Login = { token: string; expiresAt: Date; user: UserRecord; projects: ProjectWithRole[] };
export type Me = { caller: Caller; project: ProjectRecord; user?: UserRecord; apiKey?: ApiKeyRecord };

export type AccountsService = ReturnType<typeof makeAccountsService>;

export function makeAccountsService(deps: { db: Database; config: Pick<Config, 'loginTokenTtlHours'>; loginLimits?: Partial<LoginLimits>; logger?: Logger }) {
  const { db } = deps;
  const log = deps.logger ?? silentLogger;
  const limits = { ...DEFAULT_LOGIN_LIMITS, ...deps.loginLimits };

  function checkPassword(password: string): void {
    if (password.length < PASSWORD_MIN_LENGTH || password.length > PASSWORD_MAX_LENGTH) {
      throw invalid(`password must be ${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters`, [{ field: 'password', message: 'wrong length' }]);
    }
  }

  /**
   * A hash made with other scrypt parameters than today's is replaced while the login holds the
   * password, so a raised cost reaches every account that logs in. The login does not depend on
   * it: a failure to store the new hash is logged and the old one keeps working.
   */
  async function upgradePasswordHash(user: UserWithPassword, password: string): Promise<string> {
    if (!needsRehash(user.passwordHash)) return user.passwordHash;
    try {
      const hash = await hashPassword(password);
      if (await replacePasswordHash(db, user.id, user.passwordHash, hash)) return hash;
    } catch (err) {
      log.warn({ err, user_id: user.id }, 'could not store the password rehashed at the current cost; the login goes on');
    }
    return user.passwordHash;
  }

  /**
   * Counts an attempt with this email from this address; past the limits (per email, per address,
   * within the window) it is refused with 429 and does not count (it would extend the lockout).
   */
  async function throttle(email: string, ip: string, what: string): Promise<void> {
    const attempt = await recordAttempt(db, email, ip, limits.windowMs);
    if (attempt.byEmail > limits.perEmail || attempt.byIp > limits.perIp) {
      await deleteAttempt(db, attempt.id);
      const retryAfter = attempt.byEmail > limits.perEmail ? attempt.emailRetryAfter : attempt.ipRetryAfter;
      throw rateLimited(`too many ${what}; try again in ${retryAfter} s`, retryAfter);
    }
  }

  return {
    /**
     * Creates the user, their first project (with its default pipeline) and an admin API key,
     * all in one transaction: an email already registered rolls everything back and answers 409
     * with nothing else — above all, not that account's key.
     */
    async register(input: { name: string; email: string; password: string; projectName?: string; ip?: string }): Promise<Registration> {
      checkPassword(input.password);
      const email = normaliseEmail(input.email);
      if (input.ip !== undefined) {
        const retryAfter = await overLimitPerIp(db, 'registration', input.ip, limits.registrationsPerIp, limits.windowMs);
        if (retryAfter !== undefined) throw rateLimited(`too many registrations from this address; try again in ${retryAfter} s`, retryAfter);
      }
      // Hashing first keeps the transaction short, and makes "taken" cost what "created" costs.
      const passwordHash = await hashPassword(input.password);
      const userId = uuidv7();
      const projectId = uuidv7();
      const key = newSecret(API_KEY_PREFIX);
      return withTransaction(
        db,
        async (tx) => {
          const user = await insertUser(tx, { id: userId, email, name: input.name.trim(), passwordHash });
          if (!user) throw new AppError('email_taken', 'an account with this email already exists; log in instead');
          const project = await createProjectRecords(tx, { projectId, name: input.projectName?.trim() || `${user.name}'s project`, ownerId: user.id });
          const apiKey = await insertApiKey(tx, {
            id: uuidv7(),
            projectId,
            name: 'Default admin key',
            role: 'admin',
            prefix: displayPrefix(key),
            hash: secretHash(key),
            createdBy: user.id,
            createdByKeyId: null,
          });
          return { user, project: { ...project, role: 'admin' as const }, apiKey: { ...apiKey, key } };
        },
        { projectId },
      );
    },

    /**
     * Email + password → a login token. The attempt is recorded before the password is checked
     * (so parallel guesses count), refused with 429 past the per-email or per-address limit, and
     * an unknown email costs the same scrypt work as a wrong password. A right password stored at
     * an older cost is stored again at the current one.
     */
    async login(input: { email: string; password: string; ip: string }): Promise<Login> {
      const email = normaliseEmail(input.email);
      await throttle(email, input.ip, 'failed logins');
      const user = await findUserWithPassword(db, { email });
      const ok = await verifyPassword(input.password, user?.passwordHash ?? (await decoyPasswordHash()));
      if (!user || !ok) {
        await pruneLoginAttempts(db, limits.windowMs);
        throw new AppError('unauthorized', 'email or password is wrong');
      }
      await clearEmailAttempts(db, email);
      const checked = await upgradePasswordHash(user, input.password);
      const token = newSecret(LOGIN_TOKEN_PREFIX);
      const expiresAt = new Date(Date.now() + deps.config.loginTokenTtlHours * 3_600_000);
      // Stored only while the password checked is still the user's: a change that committed after
      // the check revoked every token there was, and must not miss this one.
      if (!(await insertLoginToken(db, { id: uuidv7(), userId: user.id, hash: secretHash(token), expiresAt }, checked))) throw new AppError('unauthorized', 'email or password is wrong');
      const projects = await listProjectsOfUser(db, user.id, { limit: 200 });
      const { passwordHash: _, ...publicUser } = user;
      return { token, expiresAt, user: publicUser, projects: projects.rows };
    },

    /** Revokes the login token the caller used. API keys are revoked through DELETE /api-keys/{id}. */
    async logout(caller: Caller): Promise<void> {
      if (caller.kind !== 'user' || !caller.tokenId) throw invalid('log out ends a login token; revoke an API key with DELETE /api-keys/{id}');
      await revokeAuthToken(db, caller.tokenId);
    },

    /** Revokes every login token of the caller's user, the one used included; how many. */
    async logoutEverywhere(caller: Caller): Promise<number> {
      if (caller.kind !== 'user' || !caller.userId || !caller.tokenId) throw invalid('log out everywhere ends login tokens; revoke an API key with DELETE /api-keys/{id}');
      return revokeUserTokens(db, caller.userId);
    },

    /**
     * Changes the caller's password: the current one must be given (a stolen token alone cannot
     * lock its owner out), counted as a login attempt (the same limits); every login token of the
     * user is then revoked, the one used included, and a new one is returned.
     */
    async changePassword(caller: Caller, input: { currentPassword: string; newPassword: string; ip: string }): Promise<{ token: string; expiresAt: Date }> {
      if (caller.kind !== 'user' || !caller.userId || !caller.tokenId) throw invalid('changing a password needs a login token, not an API key');
      const user = await findUserWithPassword(db, { id: caller.userId });
      if (!user) throw new AppError('unauthorized', 'this login token has no user any more');
      await throttle(user.email, input.ip, 'wrong passwords');
      if (!(await verifyPassword(input.currentPassword, user.passwordHash))) {
        await pruneLoginAttempts(db, limits.windowMs);
        throw new AppError('validation', 'the current password is wrong', [{ field: 'current_password', message: 'wrong password' }]);
      }
      await clearEmailAttempts(db, user.email);
      const hash = await hashPassword(input.newPassword);
      const token = newSecret(LOGIN_TOKEN_PREFIX);
      const expiresAt = new Date(Date.now() + deps.config.loginTokenTtlHours * 3_600_000);
      await withTransaction(db, async (tx) => {
        if (!(await changePasswordHash(tx, user.id, user.passwordHash, hash))) throw new AppError('conflict', 'the password was changed meanwhile; log in again');
        await revokeUserTokens(tx, user.id);
        await insertAuthToken(tx, { id: uuidv7(), userId: user.id, hash: secretHash(token), expiresAt });
      });
      return { token, expiresAt };
    },

    /**
     * A login token → the caller, in the project named by X-Project-ID or the user's first one.
     * A project the user does not belong to is "not found", like any other project's resource.
     */
    async resolveLoginToken(token: string, projectId: string | undefined): Promise<{ caller: Caller; expiresAt: Date } | undefined> {
      const t = await findActiveAuthToken(db, secretHash(token));
      if (!t) return undefined;
      if (projectId !== undefined && !isUuid(projectId)) throw notFound('project');
      const membership = await findMembership(db, t.userId, projectId);
      if (!membership) {
        if (projectId !== undefined) throw notFound('project');
        throw new AppError('forbidden', 'this user belongs to no project');
      }
      return { caller: { kind: 'user', projectId: membership.projectId, role: membership.role, userId: t.userId, tokenId: t.id }, expiresAt: t.expiresAt };
    },

    async me(caller: Caller): Promise<Me> {
      const [project, apiKey] = await withTransaction(
        db,
        async (tx) => [await findProject(tx, caller.projectId), caller.apiKeyId ? await findApiKey(tx, caller.projectId, caller.apiKeyId) : undefined] as const,
        { projectId: caller.projectId },
      );
      if (!project) throw notFound('project');
      const user = caller.userId ? await findUser(db, caller.userId) : undefined;
      return { caller, project, ...(user ? { user } : {}), ...(apiKey ? { apiKey } : {}) };
    },
  };
}
