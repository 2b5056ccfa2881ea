import pino from 'pino';

export type Logger = pino.Logger;

/** Query parameters that carry a secret: a WAHA webhook's token, Meta's verify token. */
const SECRET_QUERY = /([?&](?:token|hub\.verify_token)=)[^&#]*/gi;

/** A URL as logged: the secrets in its query replaced. */
export function loggableUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[redacted]');
}

/**
 * Fields of a database error that quote the rows it is about (`Key (project_id, phone)=(…, +55…)
 * already exists`), the statement or its parameters: customers' data, which stays in the tenant's
 * own records (parse errors, dead letters) and out of the operator's logs.
 */
const ERROR_FIELDS_WITH_DATA = ['detail', 'where', 'hint', 'internalQuery', 'query', 'parameters', 'params'] as const;

/** pino's error serializer (type, message, stack, own fields), without the fields that quote data. */
export function loggableError(err: unknown): unknown {
  if (!(err instanceof Error)) return err; // not an error: logged as given (and not ours to edit)
  const out = pino.stdSerializers.err(err) as unknown;
  if (out && typeof out === 'object') for (const k of ERROR_FIELDS_WITH_DATA) delete (out as Record<string, unknown>)[k];
  return out;
}

/**
 * JSON logs (pino). Secrets in common places are redacted, the query's among them: a request
 * logged at debug level shows its URL, and a WAHA webhook may carry its channel's token there.
 */
export function makeLogger(level: string = 'info', bindings: Record<string, unknown> = {}, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'ventros', ...bindings },
    redact: {
      paths: ['req.headers.authorization', 'req.headers["x-api-key"]', 'req.headers["x-webhook-token"]', '*.password', '*.secret', '*.api_key', '*.access_token', '*.app_secret'],
      censor: '[redacted]',
    },
    serializers: {
      err: loggableError,
      // Fastify's request serializer, with the query's secrets replaced.
      req: (req: { method?: string; url?: string; host?: string; ip?: string; socket?: { remotePort?: number } }) => ({
        method: req.method,
        url: typeof req.url === 'string' ? loggableUrl(req.url) : req.url,
        host: req.host,
        remoteAddress: req.ip,
        remotePort: req.socket?.remotePort,
      }),
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * For a line an outage would write on every request: `every(write)` writes at most once per `ms`,
 * telling `write` how many it held back since the last one.
 */
export function logEvery(ms: number): (write: (heldBack: number) => void) => void {
  let last = -Infinity;
  let heldBack = 0;
  return (write) => {
    if (Date.now() - last < ms) {
      heldBack++;
      return;
    }
    last = Date.now();
    write(heldBack);
    heldBack = 0;
  };
}

/** A logger that writes nothing (tests, benchmarks). */
export const silentLogger: Logger = pino({ level: 'silent' });
