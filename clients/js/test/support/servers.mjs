// The two small loopback servers of the browser test: a static file server
// for the demo page and the bundles, which also hands out tokens (what an
// application's login backend would do), and a TCP proxy between the page
// and the sidecar that the test can cut, to drop connections the way a
// network does (no close frame, no FIN from the sidecar's side).
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

/**
 * Serves `root`'s demo/ and dist/ folders, and GET /token?user=U&ttl=S
 * (and &bad=1 for a token signed with an unknown secret) through `mint`.
 */
export async function startStaticServer(root, mint) {
  const tokens = { issued: 0 };
  const server = createHttpServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    try {
      if (url.pathname === '/token') {
        const user = url.searchParams.get('user') ?? 'u1';
        const ttl = Number(url.searchParams.get('ttl') ?? 3600);
        const token = await mint(user, ttl, { bad: url.searchParams.get('bad') === '1' });
        tokens.issued++;
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
        res.end(token);
        return;
      }
      const path = normalize(join(root, decodeURIComponent(url.pathname)));
      const top = path.slice(root.length + 1).split(sep)[0];
      if (!path.startsWith(root + sep) || (top !== 'demo' && top !== 'dist')) {
        res.writeHead(404).end('not found');
        return;
      }
      const body = await readFile(path);
      res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' });
      res.end(body);
    } catch (e) {
      res.writeHead(e.code === 'ENOENT' ? 404 : 500).end(String(e));
    }
  });
  const port = await listen(server);
  return {
    origin: `http://127.0.0.1:${port}`,
    tokens,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** A TCP proxy to 127.0.0.1:targetPort whose connections can be dropped and refused at will. */
export async function startProxy(targetPort) {
  const pairs = new Set();
  let down = false;
  const stats = { accepted: 0, dropped: 0, refused: 0 };
  const server = createTcpServer((client) => {
    if (down) {
      stats.refused++;
      client.destroy();
      return;
    }
    stats.accepted++;
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listen(server);
  return {
    port,
    stats,
    /** Cuts every connection now and refuses new ones until up(). */
    down() {
      down = true;
      for (const p of pairs) {
        stats.dropped++;
        p.client.resetAndDestroy?.() ?? p.client.destroy();
        p.upstream.destroy();
      }
      pairs.clear();
    },
    up() {
      down = false;
    },
    close() {
      this.down();
      return new Promise((r) => server.close(r));
    },
  };
}
