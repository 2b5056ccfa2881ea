// Adding a person to a project by email tells a registered email from an unknown one (201 or 422),
// as registering does (409): counted per client address like registrations, whatever the answer
// would be, so that no one — any project admin, after registering — lists who has an account.
import { describe, expect, it } from 'vitest';
import { uniqueName } from '../support/env.ts';
import { makeTenant, PASSWORD, register, startApp } from './harness.ts';

const { app } = await startApp();

const addMember = (key: string, projectId: string, email: string, ip: string, role = 'viewer') =>
  app.inject({ method: 'POST', url: `/api/v1/projects/${projectId}/members`, headers: { authorization: `Bearer ${key}` }, payload: { email, role }, remoteAddress: ip });

describe('looking people up by email to add them', () => {
  it('answers 429 past 30 lookups in 15 minutes from one address, registered or not; role changes and logins are not counted', async () => {
    const t = await makeTenant(app);
    const known = `${uniqueName('known')}@example.com`;
    expect((await register(app, known)).status).toBe(201);
    const ip = '198.51.100.23';

    for (let i = 0; i < 29; i++) expect((await addMember(t.keys.admin, t.projectId, `${uniqueName('nobody')}@example.com`, ip)).statusCode).toBe(422);
    expect((await addMember(t.keys.admin, t.projectId, known, ip)).statusCode).toBe(201); // the 30th
    // A member's role changes as often as needed.
    expect((await addMember(t.keys.admin, t.projectId, known, ip, 'agent')).statusCode).toBe(200);

    // The 31st: the same answer for an unknown email and a registered one.
    const unknown = await addMember(t.keys.admin, t.projectId, `${uniqueName('nobody')}@example.com`, ip);
    const other = `${uniqueName('other')}@example.com`;
    expect((await register(app, other)).status).toBe(201);
    const registered = await addMember(t.keys.admin, t.projectId, other, ip);
    for (const r of [unknown, registered]) {
      expect(r.statusCode).toBe(429);
      expect(r.json().code).toBe('rate_limited');
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    }
    // Another address is counted apart; logging in from this one still works.
    expect((await addMember(t.keys.admin, t.projectId, other, '198.51.100.24')).statusCode).toBe(201);
    const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: t.email, password: PASSWORD }, remoteAddress: ip });
    expect(login.statusCode).toBe(200);
  });
});
