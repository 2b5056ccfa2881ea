// Projects and members. `/projects/{id}` addresses the project the caller acts in (a key's
// project, or the one a login picked with X-Project-ID); any other id is 404.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { makeProjectsService } from '../../services/projects.service.ts';
import { AddMemberBody, CreateProjectBody, Member, Project, UpdateProjectBody, presentMember, presentProject } from '../schemas/accounts.ts';
import { IdParams, ListQuery, NoContent, Page, toPageBody, Uuid } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

export async function projectsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const projects = makeProjectsService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/projects',
    summary: 'Your projects',
    description: 'A login token lists every project of the user, with the role in each; an API key lists its own project.',
    permission: 'project.read',
    querystring: ListQuery(),
    response: { 200: Page(Project) },
    handler: async (req) => toPageBody(await projects.list(req.auth, req.query), presentProject),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/projects',
    summary: 'Create a project',
    description: 'Signed-in users only (an API key belongs to one project). You become its admin; it gets a default pipeline.',
    permission: 'project.create',
    idempotent: true,
    body: CreateProjectBody,
    response: { 201: Project },
    handler: async (req, reply) => reply.code(201).send(presentProject(await projects.create(req.auth, req.body))),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/projects/:id',
    summary: 'Get a project',
    permission: 'project.read',
    params: IdParams,
    response: { 200: Project },
    handler: async (req) => presentProject(await projects.get(req.auth, req.params.id)),
  });

  defineRoute(app, {
    method: 'PATCH',
    url: '/projects/:id',
    summary: 'Rename a project or change its settings',
    permission: 'project.manage',
    params: IdParams,
    body: UpdateProjectBody,
    response: { 200: Project },
    handler: async (req) => presentProject(await projects.update(req.auth, req.params.id, req.body)),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/projects/:id/members',
    summary: "The project's members",
    permission: 'project.read',
    params: IdParams,
    querystring: ListQuery(),
    response: { 200: Page(Member) },
    handler: async (req) => toPageBody(await projects.listMembers(req.auth, req.params.id, req.query), presentMember),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/projects/:id/members',
    summary: 'Add a member, or change a member’s role',
    description: 'The person must have registered. 201 when added, 200 when the role changed. The last admin cannot be demoted.',
    permission: 'members.manage',
    idempotent: true,
    params: IdParams,
    body: AddMemberBody,
    response: { 200: Member, 201: Member },
    problems: { 409: 'The last admin cannot be demoted', 422: 'No account has this email', 429: 'Too many people looked up by email from this address (30 in 15 minutes)' },
    handler: async (req, reply) => {
      const { member, created } = await projects.addMember(req.auth, req.params.id, req.body, req.ip);
      app.authCache.forget({ userId: member.userId, projectId: member.projectId });
      return reply.code(created ? 201 : 200).send(presentMember(member));
    },
  });

  defineRoute(app, {
    method: 'DELETE',
    url: '/projects/:id/members/:user_id',
    summary: 'Remove a member',
    permission: 'members.manage',
    params: Type.Object({ id: Uuid, user_id: Uuid }),
    response: { 204: NoContent },
    problems: { 409: 'The last admin cannot be removed' },
    handler: async (req, reply) => {
      await projects.removeMember(req.auth, req.params.id, req.params.user_id);
      app.authCache.forget({ userId: req.params.user_id, projectId: req.params.id });
      return reply.code(204).send();
    },
  });
}
