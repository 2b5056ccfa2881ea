// Sign-up, login, logout and "who am I".
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeAccountsService } from '../../services/accounts.service.ts';
import { ChangePasswordBody, LoginBody, LoginResult, Me, NewLoginToken, RegisterBody, Registration, presentApiKey, presentProject, presentUser } from '../schemas/accounts.ts';
import { iso, NoContent } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

export async function authRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const accounts = makeAccountsService(deps);

  defineRoute(app, {
    method: 'POST',
    url: '/auth/register',
    summary: 'Create an account',
    description:
      'Creates the user, a default project with a default pipeline, and an admin API key shown once. An email already registered answers 409 and changes nothing.',
    public: true,
    body: RegisterBody,
    response: { 201: Registration },
    problems: { 409: 'This email is already registered', 429: 'Too many registrations from this address; Retry-After says when' },
    handler: async (req, reply) => {
      const r = await accounts.register({ ...req.body, projectName: req.body.project_name, ip: req.ip });
      return reply.code(201).send({
        user: presentUser(r.user),
        project: presentProject(r.project),
        api_key: { ...presentApiKey(r.apiKey), key: r.apiKey.key },
      });
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/auth/login',
    summary: 'Log in with email and password',
    description: `Returns a bearer token that expires. Repeated failures for one email or from one address answer 429 with Retry-After.`,
    public: true,
    body: LoginBody,
    response: { 200: LoginResult },
    problems: { 401: 'Email or password is wrong', 429: 'Too many failed logins; see Retry-After' },
    handler: async (req) => {
      const r = await accounts.login({ ...req.body, ip: req.ip });
      return { token: r.token, expires_at: iso(r.expiresAt), user: presentUser(r.user), projects: r.projects.map(presentProject) };
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/auth/logout',
    summary: 'Revoke the login token used for this request',
    permission: 'self',
    response: { 204: NoContent },
    problems: { 400: 'Not a login token' },
    handler: async (req, reply) => {
      await accounts.logout(req.auth);
      app.authCache.forget({ tokenId: req.auth.tokenId });
      return reply.code(204).send();
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/auth/logout-all',
    summary: 'Revoke every login token of your user ("log out everywhere")',
    description: 'Every login token of the user is revoked, the one used for this request included. API keys are not touched: they belong to the project.',
    permission: 'self',
    response: { 204: NoContent },
    problems: { 400: 'Not a login token' },
    handler: async (req, reply) => {
      await accounts.logoutEverywhere(req.auth);
      app.authCache.forget({ userId: req.auth.userId });
      return reply.code(204).send();
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/auth/password',
    summary: 'Change your password',
    description:
      'Needs the current password (a wrong one counts as a failed login, with the same limits). Every login token of the user is revoked, the one used for this request included; the answer carries a new one.',
    permission: 'self',
    body: ChangePasswordBody,
    response: { 200: NewLoginToken },
    problems: { 400: 'Not a login token, or the current password is wrong (`errors[].field` = `current_password`)', 409: 'The password was changed meanwhile', 429: 'Too many wrong passwords; see Retry-After' },
    handler: async (req) => {
      const r = await accounts.changePassword(req.auth, { currentPassword: req.body.current_password, newPassword: req.body.new_password, ip: req.ip });
      app.authCache.forget({ userId: req.auth.userId });
      return { token: r.token, expires_at: iso(r.expiresAt) };
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/auth/me',
    summary: 'The caller: user or API key, project and role',
    permission: 'self',
    response: { 200: Me },
    handler: async (req) => {
      const me = await accounts.me(req.auth);
      return {
        kind: me.caller.kind,
        role: me.caller.role,
        project: presentProject({ ...me.project, role: me.caller.role }),
        user: me.user ? presentUser(me.user) : null,
        api_key: me.apiKey ? presentApiKey(me.apiKey) : null,
      };
    },
  });
}
