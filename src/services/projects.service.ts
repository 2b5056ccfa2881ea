// Projects and their members. A caller always acts in one project (its key's, or the one a user
// picked with X-Project-ID); addressing any other project by id answers "not found".
import type { Database, Queryable } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import type { Page } from '../db/keyset.ts';
import { findProject, insertProject, listProjectsOfUser, updateProject, type ProjectRecord, type ProjectWithRole } from '../db/projects.sql.ts';
import { deleteMember, findMember, isMemberByEmail, listMembers, lockAdmins, upsertMember, type MemberRecord } from '../db/project-members.sql.ts';
import { insertPipeline, insertPipelineStatuses, pipelineExists, type PipelineStatusKind } from '../db/pipelines.sql.ts';
import { findUserWithPassword } from '../db/users.sql.ts';
import { overLimitPerIp } from '../db/login-attempts.sql.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { normaliseEmail } from '../domain/credentials.ts';
import { newEvent } from '../domain/events.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import type { Caller, Role } from '../domain/permissions.ts';
import { AppError, invalid, notFound, rateLimited } from '../errors.ts';
import { makeDefaultPipelineTx } from './pipelines.service.ts';

const MAX_SETTINGS_BYTES = 16 * 1024;

/** Every project starts with this pipeline; its id goes into settings.default_pipeline_id. */
export const DEFAULT_PIPELINE = {
  name: 'Sales',
  statuses: [
    { name: 'New', kind: 'open' },
    { name: 'In progress', kind: 'active' },
    { name: 'Won', kind: 'closed' },
    { name: 'Lost', kind: 'closed' },
  ] satisfies ReadonlyArray<{ name: string; kind: PipelineStatusKind }>,
} as const;

/**
 * Writes a new project with its owner as admin and its default pipeline. Runs inside the new
 * project's tenant transaction, so row-level security checks every row it writes.
 */
export async function createProjectRecords(tx: Queryable, p: { projectId: string; name: string; ownerId: string }): Promise<ProjectRecord> {
  const pipelineId = uuidv7();
  const project = await insertProject(tx, { id: p.projectId, name: p.name, settings: { default_pipeline_id: pipelineId }, createdBy: p.ownerId });
  await upsertMember(tx, { projectId: p.projectId, userId: p.ownerId, role: 'admin' });
  await insertPipeline(tx, { id: pipelineId, projectId: p.projectId, name: DEFAULT_PIPELINE.name, isDefault: true });
  const statuses = DEFAULT_PIPELINE.statuses.map((s, position) => ({ id: uuidv7(), pipelineId, name: s.name, kind: s.kind, position }));
  await insertPipelineStatuses(tx, p.projectId, statuses);
  await appendEvents(tx, [
    newEvent('pipeline.created', {
      projectId: p.projectId,
      aggregateId: pipelineId,
      data: { pipeline_id: pipelineId, name: DEFAULT_PIPELINE.name, statuses: statuses.map((s) => ({ status_id: s.id, name: s.name, position: s.position })) },
    }),
  ]);
  return project;
}

export type ProjectsService = ReturnType<typeof makeProjectsService>;

/**
 * Adding a person by email tells a registered email from an unknown one (201 or 422), as a
 * registration does (409): counted per client address like registrations, so a project admin —
 * anyone, after registering — cannot list who has an account at will. Changing a member's role is
 * not counted.
 */
const MEMBER_LOOKUPS_PER_IP = 30;
const MEMBER_LOOKUP_WINDOW_MS = 15 * 60_000;

export function makeProjectsService({ db }: { db: Database }) {
  const inProject = <T>(caller: Caller, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId: caller.projectId });

  /** The caller's project; any other id is "not found", whoever owns it. */
  function ownProject(caller: Caller, id: string): void {
    if (id.toLowerCase() !== caller.projectId) throw notFound('project');
  }

  return {
    /** A user's projects (with their role in each); an API key sees its one project. */
    async list(caller: Caller, page: { limit?: number; cursor?: string }): Promise<Page<ProjectWithRole>> {
      if (caller.kind === 'user' && caller.userId) return listProjectsOfUser(db, caller.userId, page);
      const project = await inProject(caller, (tx) => findProject(tx, caller.projectId));
      return { rows: project && page.cursor === undefined ? [{ ...project, role: caller.role }] : [], nextCursor: null };
    },

    /** A new project owned by the signed-in user (an API key is bound to its project and cannot). */
    async create(caller: Caller, input: { name: string }): Promise<ProjectWithRole> {
      if (caller.kind !== 'user' || !caller.userId) throw new AppError('forbidden', 'only a signed-in user can create projects; API keys belong to one project');
      const projectId = uuidv7();
      const ownerId = caller.userId;
      const project = await withTransaction(db, (tx) => createProjectRecords(tx, { projectId, name: input.name, ownerId }), { projectId });
      return { ...project, role: 'admin' };
    },

    async get(caller: Caller, id: string): Promise<ProjectWithRole> {
      ownProject(caller, id);
      const project = await inProject(caller, (tx) => findProject(tx, caller.projectId));
      if (!project) throw notFound('project');
      return { ...project, role: caller.role };
    },

    async update(caller: Caller, id: string, patch: { name?: string; settings?: Record<string, unknown> }): Promise<ProjectWithRole> {
      ownProject(caller, id);
      const project = await inProject(caller, async (tx) => {
        const pipelineId = patch.settings?.default_pipeline_id;
        // null removes the setting like any other key: the pipeline flagged default then applies.
        if (pipelineId !== undefined && pipelineId !== null && (!isUuid(pipelineId) || !(await pipelineExists(tx, caller.projectId, pipelineId)))) {
          throw invalid('settings.default_pipeline_id must name a pipeline of this project', [{ field: 'settings.default_pipeline_id', message: 'unknown pipeline' }]);
        }
        // The default moves as PATCH /pipelines moves it: the flag with the setting, and the events
        // (before, the setting alone changed, silently, and the two drifted apart).
        if (isUuid(pipelineId)) await makeDefaultPipelineTx(tx, caller.projectId, pipelineId.toLowerCase());
        // Stored as the database writes ids: the default is found by comparing them as text.
        const settings = isUuid(pipelineId) ? { ...patch.settings, default_pipeline_id: pipelineId.toLowerCase() } : patch.settings;
        const updated = await updateProject(tx, caller.projectId, { ...patch, ...(settings ? { settings } : {}) });
        // Read with the project in many places (consumers included): kept small, as custom_fields.
        if (updated && Buffer.byteLength(JSON.stringify(updated.settings)) > MAX_SETTINGS_BYTES) {
          throw invalid(`settings would be larger than ${MAX_SETTINGS_BYTES / 1024} KiB`, [{ field: 'settings', message: 'too large' }]);
        }
        return updated;
      });
      if (!project) throw notFound('project');
      return { ...project, role: caller.role };
    },

    async listMembers(caller: Caller, id: string, page: { limit?: number; cursor?: string }): Promise<Page<MemberRecord>> {
      ownProject(caller, id);
      return inProject(caller, (tx) => listMembers(tx, caller.projectId, page));
    },

    /** Adds a registered user by email, or changes the role of a member. */
    async addMember(caller: Caller, id: string, input: { email: string; role: Role }, ip = 'unknown'): Promise<{ member: MemberRecord; created: boolean }> {
      ownProject(caller, id);
      const email = normaliseEmail(input.email);
      // A member's role change is not counted; any other email is, before anything tells whether
      // it is registered (the same query and the same cost either way).
      if (!(await inProject(caller, (tx) => isMemberByEmail(tx, caller.projectId, email)))) {
        const retryAfter = await overLimitPerIp(db, 'member_lookup', ip, MEMBER_LOOKUPS_PER_IP, MEMBER_LOOKUP_WINDOW_MS);
        if (retryAfter !== undefined) throw rateLimited(`too many people looked up by email from this address; try again in ${retryAfter} s`, retryAfter);
      }
      // Users are global: found outside the tenant transaction, then linked inside it.
      const user = await findUserWithPassword(db, { email });
      if (!user) throw new AppError('unprocessable', 'no account has this email; the person must register first', [{ field: 'email', message: 'not registered' }]);
      return inProject(caller, async (tx) => {
        if (input.role !== 'admin') await keepAnAdmin(tx, caller.projectId, user.id);
        return upsertMember(tx, { projectId: caller.projectId, userId: user.id, role: input.role });
      });
    },

    async removeMember(caller: Caller, id: string, userId: string): Promise<void> {
      ownProject(caller, id);
      await inProject(caller, async (tx) => {
        if (!(await findMember(tx, caller.projectId, userId))) throw notFound('member');
        await keepAnAdmin(tx, caller.projectId, userId);
        await deleteMember(tx, caller.projectId, userId);
      });
    },
  };
}

/** Refuses to take the admin role from the project's last admin (nobody could manage it again). */
async function keepAnAdmin(tx: Queryable, projectId: string, losingUserId: string): Promise<void> {
  const admins = await lockAdmins(tx, projectId);
  if (admins.length === 1 && admins[0] === losingUserId) {
    throw new AppError('conflict', 'a project needs at least one admin; make someone else admin first');
  }
}
