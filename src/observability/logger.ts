import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs (pino). Secrets in common places are redacted. */
export function makeLogger(level: string = 'info', bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { service: 'ventros', ...bindings },
    redact: {
      paths: ['req.headers.authorization', 'req.headers["x-api-key"]', 'req.headers["x-webhook-token"]', '*.password', '*.secret', '*.api_key', '*.access_token', '*.app_secret'],
      censor: '[redacted]',
    },
  });
}

/** A logger that writes nothing (tests, benchmarks). */
export const silentLogger: Logger = pino({ level: 'silent' });
