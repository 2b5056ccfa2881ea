// A minimal valid value for a JSON Schema (the subset our TypeBox schemas use), so generated
// tests can send a body or query that passes validation and reach the handler.
import { uuidv7 } from '../../src/domain/ids.ts';
import { NOT_BLANK } from '../../src/http/schemas/common.ts';

export function sample(schema: any): unknown {
  if (!schema || typeof schema !== 'object') return undefined;
  if (schema.default !== undefined) return schema.default;
  if (schema.const !== undefined) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (Array.isArray(schema.anyOf ?? schema.oneOf)) return sample((schema.anyOf ?? schema.oneOf).find((s: any) => s.type !== 'null') ?? schema.anyOf[0]);
  if (Array.isArray(schema.allOf)) return Object.assign({}, ...schema.allOf.map(sample));
  const type = Array.isArray(schema.type) ? schema.type.find((t: string) => t !== 'null') : schema.type;
  switch (type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      const props: Record<string, unknown> = schema.properties ?? {};
      const required: string[] = schema.required ?? [];
      // minProperties: fill optional ones too until satisfied.
      const names = [...required, ...Object.keys(props).filter((k) => !required.includes(k)).slice(0, Math.max(0, (schema.minProperties ?? 0) - required.length))];
      for (const k of names) out[k] = sample(props[k]);
      return out;
    }
    case 'array':
      return Array.from({ length: schema.minItems ?? 0 }, () => sample(schema.items));
    case 'integer':
    case 'number':
      return schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : 1);
    case 'boolean':
      return false;
    case 'string':
      switch (schema.format) {
        case 'uuid':
          return uuidv7();
        case 'email':
          return 'someone@example.com';
        case 'date-time':
          return new Date().toISOString();
        case 'uri':
        case 'url':
          return 'https://example.com/hook';
      }
      if (schema.pattern === NOT_BLANK) return 'x'.repeat(Math.max(1, schema.minLength ?? 1));
      if (schema.pattern) return undefined; // cannot guess; the route needs a fixture
      return 'x'.repeat(Math.max(1, schema.minLength ?? 1));
    default:
      return undefined;
  }
}

/** Required query parameters of a querystring schema, as strings. */
export function sampleQuery(schema: any): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of schema?.required ?? []) out[k] = String(sample(schema.properties[k]));
  return out;
}
