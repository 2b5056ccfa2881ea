import { defineConfig } from 'vitest/config';

// `npm test` runs the whole suite on the embedded adapters (PGlite + Postgres-backed broker) and,
// when DATABASE_URL and AMQP_URL are both set, runs it again on PostgreSQL + RabbitMQ.
const withServices = Boolean(process.env.DATABASE_URL && process.env.AMQP_URL);

const common = {
  include: ['test/**/*.test.ts'],
  testTimeout: 60_000,
  hookTimeout: 60_000,
};

export default defineConfig({
  test: {
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      {
        test: {
          ...common,
          name: 'embedded',
          env: { VENTROS_TEST_TARGET: 'embedded' },
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
      ...(withServices
        ? [
            {
              test: {
                ...common,
                name: 'postgres+rabbitmq',
                env: { VENTROS_TEST_TARGET: 'services' },
                globalSetup: ['test/support/global-setup.ts'],
              },
            },
          ]
        : []),
    ],
  },
});
