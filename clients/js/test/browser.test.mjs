// The browser client in real headless Chromium against a real sidecar.
// A Python backend (examples/python_backend.py, one-shot mode) sends the
// five critical events of a run; the demo page must
// show them in order, then keep every event exactly once through a network
// drop, a slow-consumer close (4008), a drained restart (1001) and a crash
// (SIGKILL), refresh its token in-band past the token's expiry, and report
// a bad token as an auth failure without retrying it.
//
// Synchronisation is by polling page state with deadlines
// (page.waitForFunction), never by sleeping.
//
// Environment: BUILD_DIR (default <repo>/build), PYTHON (default
// /usr/bin/python3, for examples/python_backend.py), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT=file.png (the demo page at the end),
// KEEP_TMP=1 (keep the sidecar's dir and log).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { Sidecar, until } from './support/sidecar.mjs';
import { startProxy, startStaticServer } from './support/servers.mjs';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const clientRoot = resolve(here, '..');
const repoRoot = resolve(clientRoot, '..', '..');
const buildDir = resolve(process.env.BUILD_DIR ?? join(repoRoot, 'build'));
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const pythonBackend = join(repoRoot, 'examples', 'python_backend.py');

const FIVE = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed'];
/** --queue-limit of the sidecar: one event larger than this gets its connection closed with 4008. */
const QUEUE_LIMIT = 16 * 1024;
/** The refresh client's token lifetime (s); the sidecar allows 30 s of leeway past exp. */
const SHORT_TTL = 4;
const LEEWAY_S = 30;

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

let tmp, sidecar, proxy, web, context, page;
let finished = false; // the last test ran to its end
/** Every WebSocket the page opened, as Chromium saw it: its URL and first frame sent. */
const pageSockets = [];
const timings = [];
let phaseStart;
function phase(name) {
  const now = Date.now();
  if (phaseStart) timings.push(`${phaseStart.name}: ${now - phaseStart.at} ms`);
  phaseStart = name ? { name, at: now } : undefined;
}

/** The Python backend sends the five critical events of `runId` to `user`; returns what it printed. */
async function sendRun(user, runId) {
  const { stdout } = await run(
    process.env.PYTHON ?? '/usr/bin/python3',
    [pythonBackend, '--control', sidecar.control, '--user', user, '--run', runId],
    { cwd: repoRoot, env: { ...process.env, PYTHONPATH: join(repoRoot, 'clients', 'python') } },
  );
  return stdout.trim().split('\n');
}

const demo = (expr) => page.evaluate(expr);
const waitPage = (fn, arg, timeout = 15000) => page.waitForFunction(fn, arg, { timeout, polling: 50 });
const seqs = () => demo(() => window.wsgateDemo.events.map((e) => e.seq));

/** Waits until the demo page has delivered seqs 1..n, and checks it delivered exactly those. */
async function expectSeqs(n, timeout) {
  await waitPage((n) => window.wsgateDemo.events.length >= n, n, timeout);
  assert.deepEqual(await seqs(), range(1, n), 'each seq once, in order, no gap');
}

async function expectReconnected(closeCode, connectionsBefore) {
  await waitPage(
    ([code, before]) =>
      window.wsgateDemo.states.some((s) => s.closeCode === code) &&
      window.wsgateDemo.connected.length > before &&
      window.wsgateDemo.client.state === 'open',
    [closeCode, connectionsBefore],
  );
}

describe('browser client in headless Chromium against a real sidecar', { timeout: 240000 }, () => {
  before(async () => {
    phase('setup (sidecar, servers, Chromium, page open)');
    assert.ok(existsSync(join(clientRoot, 'dist', 'wsgate.mjs')), 'bundle missing: run npm run build');
    tmp = mkdtempSync(join(tmpdir(), 'wsgate-browser-'));
    sidecar = new Sidecar({ buildDir, dir: join(tmp), flags: ['--queue-limit', String(QUEUE_LIMIT), '--log-level', 'info'] });
    await sidecar.start();
    proxy = await startProxy(sidecar.port);
    web = await startStaticServer(clientRoot, (user, ttl, o) => sidecar.token(user, ttl, o));
    context = await chromium.launchPersistentContext(join(tmp, 'chromium-profile'), {
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
    page.on('websocket', (ws) => {
      const rec = { url: ws.url(), first: undefined };
      pageSockets.push(rec);
      ws.on('framesent', (f) => (rec.first ??= String(f.payload)));
    });
    const ws = `ws://127.0.0.1:${proxy.port}/ws`;
    await page.goto(`${web.origin}/demo/index.html?ws=${encodeURIComponent(ws)}&user=u1&ttl=3600&initialDelay=100&maxDelay=1000`);
    await waitPage(() => window.wsgateDemo?.client?.state === 'open');
    // Two more clients on the same page, from the IIFE bundle (the global
    // `Wsgate` of a plain <script> tag), straight to the sidecar: u2 with
    // tokens that expire every few seconds, u3 with a token the sidecar
    // cannot verify.
    await page.addScriptTag({ url: '/dist/wsgate.iife.js' });
    await page.evaluate(
      ({ ws, ttl }) => {
        const record = (user, tokenQuery) => {
          const rec = { states: [], errors: [], refreshed: [], connected: [], events: [], firstExp: undefined };
          rec.client = new window.Wsgate.WsgateClient({
            url: ws,
            getToken: async () => {
              const token = (await (await fetch(`/token?user=${user}${tokenQuery}`)).text()).trim();
              rec.firstExp ??= window.Wsgate.decodeJwtExp(token);
              return token;
            },
            onEvent: (e) => rec.events.push(e.seq),
            onStateChange: (c) => rec.states.push({ state: c.state, closeCode: c.closeCode }),
            onError: (e) => rec.errors.push(e.code),
            onRefreshed: (exp) => rec.refreshed.push(exp),
            onConnected: (i) => rec.connected.push(i.connId),
          });
          rec.client.connect();
          return rec;
        };
        window.refreshing = record('u2', `&ttl=${ttl}`);
        window.badToken = record('u3', '&bad=1');
      },
      { ws: sidecar.wsUrl, ttl: SHORT_TTL },
    );
    phase();
  });

  after(async () => {
    phase('teardown (Chromium, servers, sidecar stop)');
    if (!finished && page) {
      // What the page and the sidecar saw, for whoever reads a failure.
      const states = await demo(() => window.wsgateDemo?.states.map((s) => `${s.state}${s.closeCode ? `(${s.closeCode})` : ''}`)).catch(() => []);
      const errors = await demo(() => window.wsgateDemo?.errors).catch(() => []);
      console.log(`page u1 states: ${states?.join(' ')}\npage u1 errors: ${JSON.stringify(errors)}`);
      const log = readFileSync(sidecar.logFile, 'utf8').trim().split('\n');
      console.log(`sidecar log (last 25 lines):\n  ${log.slice(-25).join('\n  ')}`);
    }
    if (process.env.SCREENSHOT && page) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    await context?.close();
    await proxy?.close();
    await web?.close();
    await sidecar?.stop('SIGTERM').catch((e) => console.log(`sidecar stop: ${e.message}`));
    phase();
    console.log(`timings:\n  ${timings.join('\n  ')}`);
    if (process.env.KEEP_TMP) console.log(`kept ${tmp}`);
    else if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('the page receives the five critical events of a run in order', async () => {
    phase('five events');
    const printed = await sendRun('u1', 'r1');
    console.log(`python backend: ${printed.join(' | ')}`);
    assert.equal(printed.length, 5);
    await expectSeqs(5);
    const events = await demo(() => window.wsgateDemo.events);
    assert.deepEqual(
      events.map((e) => e.type),
      FIVE,
    );
    assert.ok(events.every((e) => e.run_id === 'r1'));
  });

  test('a bad token is reported as an auth failure and not retried', async () => {
    phase('bad token');
    await waitPage(() => window.badToken.client.state === 'auth_failed');
    const rec = await demo(() => ({ ...window.badToken, stats: window.badToken.client.stats, client: undefined }));
    assert.ok(rec.errors.includes('auth_failed'), `errors: ${rec.errors}`);
    assert.equal(rec.states.at(-1).closeCode, 4401);
    assert.equal(rec.stats.attempts, 1);
    assert.deepEqual(rec.connected, []);
  });

  test('a dropped connection loses nothing: events sent meanwhile arrive after the reconnect', async () => {
    phase('network drop');
    const before = await demo(() => window.wsgateDemo.connected.length);
    proxy.down();
    await waitPage(() => window.wsgateDemo.client.state !== 'open');
    const sent = [];
    for (const type of ['agent_started', 'agent_thinking']) sent.push(await sidecar.send('u1', type, { run: 'r2' }));
    assert.deepEqual(
      sent.map((r) => [r.seq, r.connections, r.retained]),
      [
        [6, 0, true],
        [7, 0, true],
      ],
      'sent while the page had no connection',
    );
    proxy.up();
    await expectReconnected(1006, before);
    await expectSeqs(7);
    const resumed = await demo(() => window.wsgateDemo.connected.at(-1).resumedFrom);
    assert.equal(resumed, 5);
  });

  test('a slow-consumer close (4008) is caught up from the log', async () => {
    phase('slow consumer 4008');
    const before = await demo(() => window.wsgateDemo.connected.length);
    const big = await sidecar.send('u1', 'tool_completed', { run: 'r2', payload: { blob: 'x'.repeat(QUEUE_LIMIT + 1024) } });
    assert.equal(big.seq, 8);
    await expectReconnected(4008, before);
    await sidecar.send('u1', 'agent_completed', { run: 'r2' });
    await expectSeqs(9);
    const events = await demo(() => window.wsgateDemo.events);
    assert.ok(events[7].size > QUEUE_LIMIT, 'the large event itself arrived');
  });

  test('the token is refreshed in-band: the connection outlives its first token', async () => {
    phase('in-band refresh (waits past exp + leeway)');
    const firstExp = await demo(() => window.refreshing.firstExp);
    assert.ok(firstExp, 'the refresh client got a JWT');
    await waitPage(
      (deadline) => Date.now() / 1000 > deadline,
      firstExp + LEEWAY_S + 2,
      (SHORT_TTL + LEEWAY_S + 20) * 1000,
    );
    const sent = await sidecar.send('u2', 'agent_started', { run: 'r9' });
    await waitPage((seq) => window.refreshing.events.includes(seq), sent.seq);
    const rec = await demo(() => ({ ...window.refreshing, state: window.refreshing.client.state, client: undefined }));
    console.log(`refresh client: ${rec.refreshed.length} refreshes, connections ${rec.connected.join(',')}, errors [${rec.errors}]`);
    assert.equal(rec.state, 'open');
    assert.equal(rec.connected.length, 1, 'one connection, never closed (no 4001)');
    assert.ok(!rec.states.some((s) => s.closeCode !== undefined), JSON.stringify(rec.states));
    assert.ok(rec.refreshed.length >= 2, `refreshed ${rec.refreshed.length} times`);
    assert.ok(rec.refreshed.at(-1) > firstExp + LEEWAY_S, 'the last refresh moved the expiry past the first token');
  });

  for (const [signal, code] of [
    ['SIGTERM', 1001],
    ['SIGKILL', 1006],
  ]) {
    test(`a sidecar restart after ${signal} (close ${code}) loses nothing`, async () => {
      phase(`restart after ${signal}`);
      const before = await demo(() => window.wsgateDemo.connected.length);
      const n = (await seqs()).length;
      const exit = await sidecar.stop(signal);
      await waitPage(() => window.wsgateDemo.client.state !== 'open');
      // Keep the page away until events have been sent to the new sidecar.
      proxy.down();
      await sidecar.start();
      const sent = [];
      for (const type of ['agent_started', 'agent_completed']) sent.push(await sidecar.send('u1', type, { run: `r-${signal}` }));
      assert.deepEqual(
        sent.map((r) => [r.seq, r.connections]),
        [
          [n + 1, 0],
          [n + 2, 0],
        ],
        `sidecar exit ${JSON.stringify(exit)}; seqs continue from the database`,
      );
      proxy.up();
      await expectReconnected(code, before);
      await expectSeqs(n + 2);
    });
  }

  test('nothing was delivered twice or refused, and the audit log verifies', async () => {
    phase('final checks');
    const d = await demo(() => ({
      errors: window.wsgateDemo.errors,
      resumeFailed: window.wsgateDemo.resumeFailed,
      stats: window.wsgateDemo.client.stats,
      states: window.wsgateDemo.states.map((s) => `${s.state}${s.closeCode ? `(${s.closeCode})` : ''}`),
      badAttempts: window.badToken.client.stats.attempts,
      badState: window.badToken.client.state,
    }));
    console.log(`page u1: ${JSON.stringify(d.stats)}`);
    console.log(`page u1 states: ${d.states.join(' ')}`);
    console.log(`proxy: ${JSON.stringify(proxy.stats)}, tokens issued: ${web.tokens.issued}`);
    assert.deepEqual(d.errors, []);
    assert.deepEqual(d.resumeFailed, []);
    assert.equal(d.stats.eventsDelivered, (await seqs()).length);
    assert.equal(d.badState, 'auth_failed');
    assert.equal(d.badAttempts, 1, 'the bad token was tried once in the whole run');
    // First-message auth as Chromium put it on the wire: no token in any
    // URL, and the auth frame first on every socket that sent anything.
    const sentSomething = pageSockets.filter((s) => s.first !== undefined);
    console.log(`page sockets: ${pageSockets.length}, ${sentSomething.length} sent frames`);
    assert.ok(sentSomething.length >= d.stats.connections + 1);
    for (const s of pageSockets) assert.ok(!/access_token|eyJ/.test(s.url), s.url);
    for (const s of sentSomething) assert.equal(JSON.parse(s.first).type, 'auth');
    const verify = await sidecar.ctl('verify');
    console.log(`wsgatectl verify: ${verify.trim().split('\n').join(' | ')}`);
    finished = true;
  });
});
