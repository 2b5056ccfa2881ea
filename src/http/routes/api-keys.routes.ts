// API keys of the caller's project: list (prefix, creator and last use; never the key), create
// (shown once), revoke.
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeApiKeysService } from '../../services/api-keys.service.ts';
import { ApiKey, ApiKeyCreated, CreateApiKeyBody, presentApiKey } from '../schemas/accounts.ts';
import { IdParams, ListQuery, NoContent, Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

export async function apiKeysRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const apiKeys = makeApiKeysService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/api-keys',
    summary: "The project's active API keys",
    permission: 'keys.manage',
    querystring: ListQuery(),
    response: { 200: Page(ApiKey) },
    handler: async (req) => toPageBody(await apiKeys.list(req.auth, req.query), presentApiKey),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/api-keys',
    summary: 'Create an API key',
    description: 'The key is in the response this once; we store only its hash.',
    permission: 'keys.manage',
    idempotent: true,
    body: CreateApiKeyBody,
    response: { 201: ApiKeyCreated },
    handler: async (req, reply) => {
      const k = await apiKeys.create(req.auth, req.body);
      return reply.code(201).send({ ...presentApiKey(k), key: k.key });
    },
  });

  defineRoute(app, {
    method: 'DELETE',
    url: '/api-keys/:id',
    summary: 'Revoke an API key',
    description: 'Takes effect at once on this server and within seconds on the others.',
    permission: 'keys.manage',
    params: IdParams,
    response: { 204: NoContent },
    handler: async (req, reply) => {
      const k = await apiKeys.revoke(req.auth, req.params.id);
      app.authCache.forget({ apiKeyId: k.id });
      return reply.code(204).send();
    },
  });
}
