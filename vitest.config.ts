import { defineConfig } from 'vitest/config';

// `npm test` runs the whole suite on the embedded adapters (PGlite + Postgres-backed broker) and,
// when DATABASE_URL and AMQP_URL are both set, runs it again on PostgreSQL + RabbitMQ. Tests that
// stop the real RabbitMQ server (`*.disruptive.test.ts`) run last, one file at a time, so they
// never pull the broker from under another test.
const withServices = Boolean(process.env.DATABASE_URL && process.env.AMQP_URL);
const DISRUPTIVE = 'test/**/*.disruptive.test.ts';

const common = {
  testTimeout: 60_000,
  hookTimeout: 60_000,
  globalSetup: ['test/support/global-setup.ts'],
};

export default defineConfig({
  test: {
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      {
        test: {
          ...common,
          name: 'embedded',
          include: ['test/**/*.test.ts'],
          exclude: [DISRUPTIVE],
          env: { VENTROS_TEST_TARGET: 'embedded' },
          sequence: { groupOrder: 0 },
        },
      },
      ...(withServices
        ? [
            {
              test: {
                ...common,
                name: 'postgres+rabbitmq',
                include: ['test/**/*.test.ts'],
                exclude: [DISRUPTIVE],
                env: { VENTROS_TEST_TARGET: 'services' },
                sequence: { groupOrder: 1 },
              },
            },
            {
              test: {
                ...common,
                name: 'postgres+rabbitmq (broker stopped)',
                include: [DISRUPTIVE],
                env: { VENTROS_TEST_TARGET: 'services' },
                fileParallelism: false,
                sequence: { groupOrder: 2 },
              },
            },
          ]
        : []),
    ],
  },
});
