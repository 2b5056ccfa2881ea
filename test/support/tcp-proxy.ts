// A TCP proxy a test can break on purpose: the fault injection for "the broker went away" without
// stopping the shared server other test files are using.
//   cut()     drops every connection and refuses new ones (a restart / network partition)
//   restore() accepts connections again
//   freeze()  keeps connections open but forwards nothing (a broker that stopped answering)
//   thaw()    forwards again
//   stall()   the connections open now forward nothing from here on, later ones work (a peer that
//             went silent on one connection: a half-open TCP connection)
import net from 'node:net';

export type TcpProxy = {
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  urlFor(url: string): string;
  cut(): void;
  restore(): void;
  freeze(): void;
  thaw(): void;
  stall(): void;
  /** Connections accepted and forwarded so far. */
  accepted(): number;
  close(): Promise<void>;
};

type Pair = { client: net.Socket; upstream: net.Socket };

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let refusing = false;
  let frozen = false;
  let accepted = 0;

  const link = (p: Pair) => {
    p.client.pipe(p.upstream);
    p.upstream.pipe(p.client);
  };
  const unlink = (p: Pair) => {
    p.client.unpipe(p.upstream);
    p.upstream.unpipe(p.client);
    p.client.pause();
    p.upstream.pause();
  };

  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect(target.port, target.host);
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    if (frozen) unlink(pair);
    else link(pair);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    urlFor(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    cut() {
      refusing = true;
      for (const p of [...pairs]) {
        p.client.destroy();
        p.upstream.destroy();
      }
      pairs.clear();
    },
    restore() {
      refusing = false;
    },
    freeze() {
      frozen = true;
      for (const p of pairs) unlink(p);
    },
    thaw() {
      frozen = false;
      for (const p of pairs) link(p);
    },
    stall() {
      for (const p of pairs) unlink(p);
    },
    accepted: () => accepted,
    async close() {
      refusing = true;
      for (const p of [...pairs]) {
        p.client.destroy();
        p.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
