// The channel cache when LISTEN cannot be made at first: the directory still starts, keeps what it
// loads for a second only, and once a later try listens, a change drops the cached channel at once.
import { describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeChannelsService } from '../../src/services/channels.service.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';
import { failingListen } from '../support/failing-listen.ts';

const SECRET_KEY = 'k'.repeat(64);

describe('channel directory', () => {
  it('starts while LISTEN fails, caches briefly meanwhile, and drops a changed channel once it listens', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const projectId = uuidv7();
    const ch = await channels.create(projectId, { name: 'first', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    const flaky = failingListen(db, 1);
    const directory = makeChannelDirectory({ db: flaky.db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
    await directory.start(); // its first LISTEN failed; it starts anyway
    onCleanup(() => directory.stop());
    expect((await directory.get(ch.id))?.name).toBe('first');

    // Not listening yet (or only just): the cached entry lives a second, not a minute.
    await channels.update(projectId, ch.id, { name: 'second' });
    await waitFor(async () => (await directory.get(ch.id))?.name === 'second', 'the renamed channel', 10_000);

    await waitFor(() => flaky.listening() === 1, 'a later LISTEN', 10_000);
    directory.invalidate(ch.id);
    expect((await directory.get(ch.id))?.name).toBe('second'); // loaded while listening
    // Cached for a minute now: only the change notification can make this pass in time.
    await channels.update(projectId, ch.id, { name: 'third' });
    await waitFor(async () => (await directory.get(ch.id))?.name === 'third', 'the change to be heard', 10_000);
  });
});
