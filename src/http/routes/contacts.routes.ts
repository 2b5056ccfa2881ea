// /contacts: list and search, create, read, edit, delete, and a contact's sessions, messages and
// timeline. Handlers only translate: the service does the work in a tenant transaction.
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeContactsService } from '../../services/contacts.service.ts';
import { IdParams, ListQuery, NoContent, Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { Contact, ContactListQuery, CreateContactBody, presentContact, UpdateContactBody } from '../schemas/contact.schemas.ts';
import { Message, presentMessage, presentTimelineEntry, TimelineItem } from '../schemas/message.schemas.ts';
import { presentSession, Session } from '../schemas/session.schemas.ts';

export async function contactsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const contacts = makeContactsService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/contacts',
    summary: 'List contacts, newest first',
    description: '`search` matches part of the name, email or phone; `tag` (repeatable) keeps contacts that have every tag given.',
    permission: 'contacts.read',
    querystring: ContactListQuery,
    response: { 200: Page(Contact) },
    handler: async (req) => {
      const { search, tag, limit, cursor } = req.query;
      return toPageBody(await contacts.list(req.auth.projectId, { search, tags: tag, limit, cursor }), presentContact);
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/contacts',
    summary: 'Create a contact',
    description: 'The phone is stored in E.164 and is unique in the project (409 when taken). A name given here is never replaced by a WhatsApp push name.',
    permission: 'contacts.write',
    idempotent: true,
    body: CreateContactBody,
    response: { 201: Contact },
    problems: { 409: 'A contact with this phone already exists, or Idempotency-Key reused' },
    handler: async (req, reply) => {
      const contact = await contacts.create(req.auth.projectId, req.body);
      return reply.code(201).header('location', `/api/v1/contacts/${contact.id}`).send(presentContact(contact));
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/contacts/:id',
    summary: 'Get a contact',
    permission: 'contacts.read',
    params: IdParams,
    response: { 200: Contact },
    handler: async (req) => presentContact(await contacts.get(req.auth.projectId, req.params.id)),
  });

  defineRoute(app, {
    method: 'PATCH',
    url: '/contacts/:id',
    summary: "Update a contact's name, email, tags or custom fields",
    permission: 'contacts.write',
    params: IdParams,
    body: UpdateContactBody,
    response: { 200: Contact },
    handler: async (req) => presentContact(await contacts.update(req.auth.projectId, req.params.id, req.body)),
  });

  defineRoute(app, {
    method: 'DELETE',
    url: '/contacts/:id',
    summary: 'Delete a contact',
    description: 'The contact disappears from the API; its sessions and messages are kept, and its active sessions end (reason `contact_deleted`). The phone becomes free for a new contact.',
    permission: 'contacts.write',
    params: IdParams,
    response: { 204: NoContent },
    handler: async (req, reply) => {
      await contacts.remove(req.auth, req.params.id);
      return reply.code(204).send();
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/contacts/:id/sessions',
    summary: "A contact's sessions, newest first",
    tags: ['contacts', 'sessions'],
    permission: 'sessions.read',
    params: IdParams,
    querystring: ListQuery(),
    response: { 200: Page(Session) },
    handler: async (req) => toPageBody(await contacts.sessions(req.auth.projectId, req.params.id, req.query), presentSession),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/contacts/:id/messages',
    summary: "A contact's messages, newest first by provider timestamp",
    tags: ['contacts', 'messages'],
    permission: 'messages.read',
    params: IdParams,
    querystring: ListQuery(),
    response: { 200: Page(Message) },
    handler: async (req) => toPageBody(await contacts.messages(req.auth.projectId, req.params.id, req.query), presentMessage),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/contacts/:id/timeline',
    summary: "A contact's history, newest first",
    description:
      'Messages, session starts and session ends in one stream. Each item is `{type, at, message}` or `{type, at, session}`; ' +
      '`type` is `message`, `session_started` or `session_ended`. More types may be added: skip the ones you do not know.',
    tags: ['contacts'],
    permission: 'messages.read',
    params: IdParams,
    querystring: ListQuery(),
    response: { 200: Page(TimelineItem) },
    handler: async (req) => toPageBody(await contacts.timeline(req.auth.projectId, req.params.id, req.query), presentTimelineEntry),
  });
}
