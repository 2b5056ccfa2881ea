// A WAHA reply's media_url host is looked up as WAHA's resolver would find it: as given, completed
// by each search domain, and in the hosts file — the ways a cloud metadata service is reached by
// name (GCE's hosts entry for metadata.google.internal, EC2's `instance-data` under ec2.internal).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hostsAddresses, makeMediaLookup, searchDomains } from '../../src/channels/media-lookup.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'ventros-lookup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};

const hostsPath = file('hosts', '127.0.0.1 localhost\n# a comment 169.254.169.254 commented\n169.254.169.254 metadata.google.internal metadata  # Added by Google\n10.0.0.9 files.lan\n');
const resolvConfPath = file('resolv.conf', 'nameserver 10.255.255.53\ndomain old.example\nsearch ec2.internal corp.example\noptions ndots:1\n');

describe('the media_url lookup', () => {
  it('reads search domains and hosts entries as the system resolver does', () => {
    expect(searchDomains('domain a.example\nsearch b.example c.example # comment\n')).toEqual(['b.example', 'c.example']);
    expect(searchDomains('search b.example\ndomain a.example\n')).toEqual(['a.example']); // the last line wins
    expect(searchDomains('nameserver 1.1.1.1\n')).toEqual([]);
    expect(hostsAddresses('169.254.169.254 Metadata  # x\n::1 ip6-localhost\n', new Set(['metadata']))).toEqual([{ address: '169.254.169.254', family: 4 }]);
  });

  it('finds a name in the hosts file, in any case', async () => {
    const lookup = makeMediaLookup({ hostsPath, resolvConfPath, query: async () => [] });
    expect(await lookup('metadata')).toContainEqual({ address: '169.254.169.254', family: 4 });
    expect(await lookup('Metadata.Google.Internal')).toContainEqual({ address: '169.254.169.254', family: 4 });
    expect(await lookup('files.lan')).toEqual([{ address: '10.0.0.9', family: 4 }]);
  });

  it('completes a short name with each search domain, and a rooted one with none', async () => {
    const asked: string[] = [];
    const query = async (name: string) => {
      asked.push(name);
      return name === 'instance-data.ec2.internal' ? [{ address: '169.254.169.254', family: 4 }] : [];
    };
    const lookup = makeMediaLookup({ hostsPath, resolvConfPath, query });
    expect(await lookup('instance-data')).toEqual([{ address: '169.254.169.254', family: 4 }]);
    expect(asked).toEqual(['instance-data', 'instance-data.ec2.internal', 'instance-data.corp.example']);
    asked.length = 0;
    expect(await lookup('instance-data.')).toEqual([]);
    expect(asked).toEqual(['instance-data']);
  });

  it('answers by its deadline with what it has, and stops the lookups still out', async () => {
    let cancelled = 0;
    const query = (_name: string, cancels: Array<() => void>) =>
      new Promise<never>(() => cancels.push(() => cancelled++)); // a server that never answers
    const lookup = makeMediaLookup({ hostsPath, resolvConfPath, query, deadlineMs: 100 });
    expect(await lookup('metadata')).toEqual([{ address: '169.254.169.254', family: 4 }]); // the hosts file's
    expect(cancelled).toBe(3);
  });
});
