// Who may do what: THE one table of (role, action). Every /api/v1 route names the action it
// performs (`config.permission`); the auth hook asks `can(role, action)` before the handler runs.
// A new capability is a new row here, and nowhere else.

export const ROLES = ['admin', 'manager', 'agent', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export const isRole = (s: unknown): s is Role => typeof s === 'string' && (ROLES as readonly string[]).includes(s);

const all = ROLES;
const workers = ['admin', 'manager', 'agent'] as const;
const managers = ['admin', 'manager'] as const;
const admins = ['admin'] as const;

/**
 * viewer  reads the project's conversations, contacts, pipelines and channels.
 * agent   also works conversations and contacts (writes contacts, sessions, messages).
 * manager also configures channels, pipelines and webhooks, and reads the event log.
 * admin   also manages members, API keys, the project itself and the admin endpoints.
 *
 * Reads worth a note:
 * - channels.read is everyone's: agents choose the channel they reply through, viewers see where
 *   a conversation came in. Channel responses never carry provider secrets; the webhook URL
 *   embeds the ingress token, so the channels routes should show it only to callers that
 *   `can(role, 'channels.manage')`.
 * - webhooks.read is managers' and admins': subscriptions carry receivers' endpoints and custom
 *   headers (often their credentials) and deliveries carry whole payloads; it is integration
 *   configuration, not conversation data.
 * - events.read (the event log) is managers' and admins': the audience that debugs integrations.
 *   It holds nothing a viewer could not read through contacts and messages, but it is an
 *   integration tool, like webhooks.
 * - self is what any caller may do to its own credential (who am I, log out).
 */
export const PERMISSIONS = {
  self: all,
  'project.read': all,
  'project.manage': admins,
  'project.create': admins,
  'members.manage': admins,
  'keys.manage': admins,
  'contacts.read': all,
  'contacts.write': workers,
  'sessions.read': all,
  'sessions.write': workers,
  'messages.read': all,
  'messages.write': workers,
  'channels.read': all,
  'channels.manage': managers,
  'pipelines.read': all,
  'pipelines.manage': managers,
  'webhooks.read': managers,
  'webhooks.manage': managers,
  'events.read': managers,
  'admin.read': admins,
  'admin.write': admins,
} as const satisfies Record<string, readonly Role[]>;

export type Action = keyof typeof PERMISSIONS;

export const ACTIONS = Object.keys(PERMISSIONS) as Action[];

export const isAction = (s: unknown): s is Action => typeof s === 'string' && Object.hasOwn(PERMISSIONS, s);

export function can(role: Role, action: Action): boolean {
  return (PERMISSIONS[action] as readonly Role[]).includes(role);
}


/** Who is calling, once a credential is resolved: always exactly one project and one role. */
export type Caller = {
  kind: 'api_key' | 'user';
  projectId: string;
  role: Role;
  /** The signed-in user (login tokens only: an API key acts as itself, not as its creator). */
  userId?: string;
  apiKeyId?: string;
  tokenId?: string;
};
