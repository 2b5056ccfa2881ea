// The one (role, action) table says what the contract says.
import { describe, expect, it } from 'vitest';
import { ACTIONS, can, PERMISSIONS, ROLES } from '../../src/domain/permissions.ts';

const granted = (role: (typeof ROLES)[number]) => ACTIONS.filter((a) => can(role, a));

describe('permissions', () => {
  it('lets a viewer read and nothing else (besides its own credential)', () => {
    expect(granted('viewer').filter((a) => !a.endsWith('.read') && a !== 'self')).toEqual([]);
  });

  it('lets an agent work conversations and contacts, but not manage channels, webhooks, keys or members', () => {
    for (const a of ['contacts.write', 'sessions.write', 'messages.write'] as const) expect(can('agent', a)).toBe(true);
    for (const a of ['channels.manage', 'webhooks.manage', 'keys.manage', 'members.manage', 'pipelines.manage', 'admin.read'] as const) {
      expect(can('agent', a)).toBe(false);
    }
  });

  it('lets a manager configure channels, pipelines and webhooks, but not members, keys or admin', () => {
    for (const a of ['channels.manage', 'pipelines.manage', 'webhooks.manage'] as const) expect(can('manager', a)).toBe(true);
    for (const a of ['members.manage', 'keys.manage', 'admin.read', 'admin.write', 'project.manage'] as const) expect(can('manager', a)).toBe(false);
  });

  it('lets an admin do everything, and each role at least what the role below it may', () => {
    expect(granted('admin')).toEqual(ACTIONS);
    for (let i = 1; i < ROLES.length; i++) {
      const lower = granted(ROLES[i]);
      expect(lower.filter((a) => !can(ROLES[i - 1], a))).toEqual([]);
    }
    expect(Object.keys(PERMISSIONS).length).toBe(ACTIONS.length);
  });
});
