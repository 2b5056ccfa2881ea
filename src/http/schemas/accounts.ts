// Wire shapes of users, projects, members and API keys, and the functions that present records
// in them (snake_case, ISO times). Secrets appear only in the *Created shapes, once.
import { Type, type Static } from '@sinclair/typebox';
import type { ApiKeyRecord } from '../../db/api-keys.sql.ts';
import type { MemberRecord } from '../../db/project-members.sql.ts';
import type { ProjectRecord } from '../../db/projects.sql.ts';
import type { UserRecord } from '../../db/users.sql.ts';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../../domain/credentials.ts';
import { ROLES, type Role } from '../../domain/permissions.ts';
import { FreeObject, iso, isoOrNull, NOT_BLANK, Nullable, Timestamp, Uuid } from './common.ts';

export const RoleSchema = Type.Unsafe<Role>({ type: 'string', enum: [...ROLES], description: 'admin | manager | agent | viewer' });
const Email = Type.String({ format: 'email', maxLength: 320 });
const Name = Type.String({ minLength: 1, maxLength: 200, pattern: NOT_BLANK });

export const User = Type.Object({ id: Uuid, name: Type.String(), email: Type.String(), created_at: Timestamp }, { title: 'User' });

export const Project = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    settings: FreeObject('Project settings, e.g. default_pipeline_id'),
    role: RoleSchema,
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Project', description: "A project, with the caller's role in it" },
);

export const Member = Type.Object(
  { user_id: Uuid, name: Type.String(), email: Type.String(), role: RoleSchema, created_at: Timestamp },
  { title: 'Member' },
);

export const ApiKey = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    role: RoleSchema,
    prefix: Type.String({ description: 'The first characters of the key, to tell keys apart' }),
    created_by: Nullable({ ...Uuid, description: 'The user who created the key while signed in; null when an API key created it (or the user was deleted)' }),
    created_by_key_id: Nullable({ ...Uuid, description: 'The API key that created this key; null when a signed-in user did' }),
    created_at: Timestamp,
    last_used_at: Nullable(Timestamp),
    revoked_at: Nullable(Timestamp),
  },
  { title: 'ApiKey' },
);

export const ApiKeyCreated = Type.Object(
  { ...ApiKey.properties, key: Type.String({ description: 'The key itself. Shown this once; we keep only its hash.' }) },
  { title: 'ApiKeyCreated' },
);

// ---- requests ----

// Bodies are closed, as the other routes' are: a misspelt field is a 400 naming it, not ignored.
export const RegisterBody = Type.Object(
  {
    name: Name,
    email: Email,
    password: Type.String({ minLength: PASSWORD_MIN_LENGTH, maxLength: PASSWORD_MAX_LENGTH }),
    project_name: Type.Optional(Name),
  },
  { additionalProperties: false },
);

export const LoginBody = Type.Object({ email: Email, password: Type.String({ minLength: 1, maxLength: PASSWORD_MAX_LENGTH }) }, { additionalProperties: false });

export const ChangePasswordBody = Type.Object(
  {
    current_password: Type.String({ minLength: 1, maxLength: PASSWORD_MAX_LENGTH }),
    new_password: Type.String({ minLength: PASSWORD_MIN_LENGTH, maxLength: PASSWORD_MAX_LENGTH }),
  },
  { additionalProperties: false },
);

export const NewLoginToken = Type.Object({ token: Type.String(), expires_at: Timestamp }, { title: 'NewLoginToken' });

export const CreateApiKeyBody = Type.Object({ name: Name, role: RoleSchema }, { additionalProperties: false });

export const CreateProjectBody = Type.Object({ name: Name }, { additionalProperties: false });

export const UpdateProjectBody = Type.Object(
  {
    name: Type.Optional(Name),
    settings: Type.Optional(FreeObject('Merged into the settings; a key set to null is removed')),
  },
  { minProperties: 1, additionalProperties: false },
);

export const AddMemberBody = Type.Object({ email: Email, role: RoleSchema }, { additionalProperties: false });

// ---- responses ----

export const Registration = Type.Object({ user: User, project: Project, api_key: ApiKeyCreated }, { title: 'Registration' });

export const LoginResult = Type.Object(
  { token: Type.String({ description: 'Send as Authorization: Bearer <token>' }), expires_at: Timestamp, user: User, projects: Type.Array(Project) },
  { title: 'Login' },
);

export const Me = Type.Object(
  {
    kind: Type.Unsafe<'api_key' | 'user'>({ type: 'string', enum: ['api_key', 'user'] }),
    role: RoleSchema,
    project: Project,
    user: Nullable(User),
    api_key: Nullable(ApiKey),
  },
  { title: 'Me' },
);

// ---- presenters ----

export const presentUser = (u: UserRecord): Static<typeof User> => ({ id: u.id, name: u.name, email: u.email, created_at: iso(u.createdAt) });

export const presentProject = (p: ProjectRecord & { role: Role }): Static<typeof Project> => ({
  id: p.id,
  name: p.name,
  settings: p.settings,
  role: p.role,
  created_at: iso(p.createdAt),
  updated_at: iso(p.updatedAt),
});

export const presentMember = (m: MemberRecord): Static<typeof Member> => ({
  user_id: m.userId,
  name: m.name,
  email: m.email,
  role: m.role,
  created_at: iso(m.createdAt),
});

export const presentApiKey = (k: ApiKeyRecord): Static<typeof ApiKey> => ({
  id: k.id,
  name: k.name,
  role: k.role,
  prefix: k.prefix,
  created_by: k.createdBy,
  created_by_key_id: k.createdByKeyId,
  created_at: iso(k.createdAt),
  last_used_at: isoOrNull(k.lastUsedAt),
  revoked_at: isoOrNull(k.revokedAt),
});
