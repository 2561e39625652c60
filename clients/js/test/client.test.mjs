// Unit tests of WsgateClient's logic against a fake socket and mocked
// timers (node:test): what it sends, what it delivers, and how it reacts to
// each close code. The real sidecar and a real browser are in browser.test.mjs.
import { after, afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { WsgateClient, decodeJwtExp, isStandardEvent, CRITICAL_EVENT_TYPES } from '../dist/wsgate.mjs';

const T0 = 1_700_000_000_000;

/** A socket the test plays the sidecar for. */
class FakeSocket {
  constructor(url) {
    this.url = new URL(url);
    this.sent = [];
    this.closedWith = undefined;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
  }
  // --- the sidecar's side ---
  open() {
    this.onopen?.({});
  }
  frame(obj) {
    this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
  }
  serverClose(code, reason = '') {
    this.onclose?.({ code, reason });
  }
  connected(seq = 0, user = 'u1', epoch = undefined) {
    this.open();
    this.frame({ type: 'connected', conn_id: `c-${sockets.length}`, user_id: user, seq, epoch });
  }
  events(...seqs) {
    for (const seq of seqs) this.frame(event(seq));
  }
}

let sockets = [];

function event(seq, type = CRITICAL_EVENT_TYPES[(seq - 1) % 5]) {
  return {
    type,
    seq,
    event_id: `e-${seq}`,
    user_id: 'u1',
    thread_id: 't1',
    run_id: 'r1',
    ts: 1,
    payload: { n: seq },
  };
}

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

/**
 * An unsigned JWT-shaped token expiring `ttlS` seconds from the mocked now,
 * issued by a clock `skewS` seconds ahead of ours (iat only when skewS is given).
 */
function jwt(ttlS, skewS) {
  const now = Math.floor(Date.now() / 1000) + (skewS ?? 0);
  const claims = skewS === undefined ? { sub: 'u1', exp: now + ttlS } : { sub: 'u1', iat: now, exp: now + ttlS };
  return `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}.sig`;
}

/** Lets pending promise continuations (getToken) run. */
async function flush() {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** A client recording everything it reports; `opts` overrides the defaults. */
function makeClient(opts = {}) {
  const log = { events: [], states: [], errors: [], connected: [], resumeFailed: [], refreshed: [], tokens: 0 };
  const client = new WsgateClient({
    url: 'ws://127.0.0.1:9/ws',
    getToken: () => {
      log.tokens++;
      return `tok-${log.tokens}`;
    },
    onEvent: (e) => log.events.push(e.seq),
    onStateChange: (c) => log.states.push(c),
    onError: (e) => log.errors.push(e),
    onConnected: (i) => log.connected.push(i),
    onResumeFailed: (i) => log.resumeFailed.push(i),
    onRefreshed: (exp) => log.refreshed.push(exp),
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    pingIntervalMs: 0,
    ...opts,
  });
  return { client, log };
}

async function connectedClient(opts = {}, seq = 0) {
  const c = makeClient(opts);
  c.client.connect();
  await flush();
  sockets.at(-1).connected(seq);
  return c;
}

beforeEach(() => {
  sockets = [];
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});
after(() => mock.timers.reset());

const lastState = (log) => log.states.at(-1);

describe('connecting', () => {
  test('the first frame is the auth frame; the URL carries no token and no since', async () => {
    const { client, log } = makeClient();
    client.connect();
    assert.equal(client.state, 'connecting');
    await flush();
    assert.equal(sockets.length, 1);
    const s = sockets[0];
    assert.equal(s.url.search, '');
    assert.deepEqual(s.sent, []);
    s.open();
    assert.deepEqual(s.sent, [{ type: 'auth', token: 'tok-1' }]);
    s.frame({ type: 'connected', conn_id: 'c-1', user_id: 'u1', seq: 7, epoch: '00112233aabbccdd' });
    assert.equal(client.state, 'open');
    assert.equal(client.connId, 'c-1');
    assert.equal(client.epoch, '00112233aabbccdd');
    assert.deepEqual(log.connected, [
      {
        connId: 'c-1',
        userId: 'u1',
        serverSeq: 7,
        resumedFrom: undefined,
        epoch: '00112233aabbccdd',
        epochChanged: false,
      },
    ]);
    assert.deepEqual(
      log.states.map((c) => c.state),
      ['connecting', 'open'],
    );
  });

  test('a given since is the first resume point, and an existing query is kept', async () => {
    const { client } = makeClient({ url: 'ws://h:1/ws?tenant=a', since: 41 });
    client.connect();
    await flush();
    assert.equal(sockets[0].url.searchParams.get('since'), '41');
    assert.equal(sockets[0].url.searchParams.get('tenant'), 'a');
  });

  test('an http URL is turned into ws', async () => {
    const { client } = makeClient({ url: 'https://h/ws' });
    client.connect();
    await flush();
    assert.equal(sockets[0].url.protocol, 'wss:');
  });

  test('connect() while active does not open a second socket', async () => {
    const { client } = await connectedClient();
    client.connect();
    await flush();
    assert.equal(sockets.length, 1);
  });

  test('a getToken that throws is reported and retried with backoff', async () => {
    let calls = 0;
    const { client, log } = makeClient({
      getToken: async () => {
        calls++;
        if (calls === 1) throw new Error('token endpoint down');
        return 'good';
      },
    });
    client.connect();
    await flush();
    assert.equal(sockets.length, 0);
    assert.equal(log.errors[0].code, 'token_error');
    assert.equal(lastState(log).state, 'reconnecting');
    mock.timers.tick(lastState(log).delayMs);
    await flush();
    assert.equal(sockets.length, 1);
    sockets[0].open();
    assert.deepEqual(sockets[0].sent, [{ type: 'auth', token: 'good' }]);
  });

  test('no connected frame in time: the attempt is abandoned and retried', async () => {
    const { client, log } = makeClient({ connectTimeoutMs: 5000 });
    client.connect();
    await flush();
    sockets[0].open();
    mock.timers.tick(5000);
    assert.equal(log.errors[0].code, 'connect_timeout');
    assert.equal(sockets[0].closedWith.code, 1000);
    assert.equal(lastState(log).state, 'reconnecting');
    // A late frame of the abandoned socket changes nothing.
    sockets[0].frame({ type: 'connected', conn_id: 'late', user_id: 'u1', seq: 0 });
    assert.equal(client.state, 'reconnecting');
  });

  test('close() during getToken opens no socket', async () => {
    let release;
    const { client, log } = makeClient({ getToken: () => new Promise((r) => (release = r)) });
    client.connect();
    client.close();
    release('tok');
    await flush();
    assert.equal(sockets.length, 0);
    assert.equal(lastState(log).state, 'closed');
  });
});

describe('delivery', () => {
  test('events reach their typed handler, then onEvent, in order', async () => {
    const order = [];
    const handlers = {};
    for (const t of CRITICAL_EVENT_TYPES) handlers[t] = (e) => order.push(`${t}:${e.seq}`);
    const { log } = await connectedClient({
      handlers,
      customHandlers: { 'ui.progress': (e) => order.push(`custom:${e.seq}`) },
      onEvent: (e) => order.push(`any:${e.seq}`),
    });
    sockets[0].events(1, 2, 3, 4, 5);
    sockets[0].frame(event(6, 'ui.progress'));
    assert.deepEqual(order, [
      'agent_started:1',
      'any:1',
      'agent_thinking:2',
      'any:2',
      'tool_executing:3',
      'any:3',
      'tool_completed:4',
      'any:4',
      'agent_completed:5',
      'any:5',
      'custom:6',
      'any:6',
    ]);
    assert.equal(log.errors.length, 0);
  });

  test('a seq at or below the last delivered one is never delivered again', async () => {
    const { client, log } = await connectedClient();
    sockets[0].events(1, 2, 3, 2, 3, 1, 4);
    assert.deepEqual(log.events, [1, 2, 3, 4]);
    assert.equal(client.lastSeq, 4);
    assert.equal(client.stats.duplicatesDropped, 3);
    assert.equal(client.stats.eventsDelivered, 4);
  });

  test('a handler that throws is reported and delivery goes on', async () => {
    const { log } = await connectedClient({
      handlers: {
        agent_started: () => {
          throw new Error('boom');
        },
      },
    });
    sockets[0].events(1, 2);
    assert.deepEqual(log.events, [1, 2]);
    assert.equal(log.errors[0].code, 'handler_error');
  });

  test('frames that are not JSON objects are reported and ignored; unknown control frames are ignored', async () => {
    const { client, log } = await connectedClient();
    sockets[0].frame('not json');
    sockets[0].frame('[1,2]');
    sockets[0].frame({ type: 'future_control_frame' });
    sockets[0].events(1);
    assert.deepEqual(
      log.errors.map((e) => e.code),
      ['invalid_frame', 'invalid_frame'],
    );
    assert.deepEqual(log.events, [1]);
    assert.equal(client.state, 'open');
  });

  test('server error frames are surfaced and the connection stays', async () => {
    const { client, log } = await connectedClient();
    sockets[0].frame({ type: 'error', code: 'backend_unavailable' });
    assert.deepEqual(log.errors, [{ code: 'backend_unavailable', message: 'backend_unavailable' }]);
    assert.equal(client.state, 'open');
  });

  test('resume_failed is surfaced with the lost range', async () => {
    const { client, log } = makeClient({ since: 10 });
    client.connect();
    await flush();
    sockets[0].connected(100);
    sockets[0].frame({ type: 'resume_failed', oldest_seq: 50 });
    sockets[0].events(50, 51);
    assert.deepEqual(log.resumeFailed, [
      { requestedSince: 10, oldestSeq: 50, lostFrom: 11, lostTo: 49, epochChanged: false },
    ]);
    assert.deepEqual(log.events, [50, 51]);
  });

  test('a sidecar whose seq went below ours is reported, and its new events are delivered', async () => {
    const { client, log } = makeClient({ since: 10 });
    client.connect();
    await flush();
    sockets[0].connected(2);
    sockets[0].events(3);
    assert.equal(log.errors[0].code, 'seq_reset');
    assert.deepEqual(log.events, [3]);
  });

  test('send() forwards JSON while open only', async () => {
    const { client } = makeClient();
    assert.equal(client.send({ type: 'user_message', text: 'hi' }), false);
    client.connect();
    await flush();
    sockets[0].connected();
    assert.equal(client.send({ type: 'user_message', text: 'hi' }), true);
    assert.deepEqual(sockets[0].sent.at(-1), { type: 'user_message', text: 'hi' });
  });

  test('isStandardEvent tells the six standard types from custom ones', () => {
    assert.equal(isStandardEvent(event(1, 'agent_error')), true);
    assert.equal(isStandardEvent(event(1, 'agent_started')), true);
    assert.equal(isStandardEvent(event(1, 'ui.progress')), false);
  });
});

describe('reconnecting', () => {
  test('a dropped connection resumes from the last delivered seq; replayed events are not repeated', async () => {
    const { client, log } = await connectedClient();
    sockets[0].events(1, 2, 3);
    sockets[0].serverClose(1006);
    assert.equal(client.state, 'reconnecting');
    assert.equal(lastState(log).closeCode, 1006);
    mock.timers.tick(lastState(log).delayMs);
    await flush();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.searchParams.get('since'), '3');
    sockets[1].connected(5);
    assert.equal(log.connected[1].resumedFrom, 3);
    sockets[1].events(3, 4, 5, 6);
    assert.deepEqual(log.events, [1, 2, 3, 4, 5, 6]);
  });

  test('the epoch of connected goes back with since; a given since and epoch are the first resume point', async () => {
    const { client, log } = makeClient({ since: 4, epoch: 'e1' });
    client.connect();
    await flush();
    assert.equal(sockets[0].url.searchParams.get('since'), '4');
    assert.equal(sockets[0].url.searchParams.get('epoch'), 'e1');
    sockets[0].connected(6, 'u1', 'e1');
    sockets[0].events(5, 6);
    assert.equal(log.connected[0].epochChanged, false);
    sockets[0].serverClose(1006);
    mock.timers.tick(lastState(log).delayMs);
    await flush();
    assert.equal(sockets[1].url.searchParams.get('since'), '6');
    assert.equal(sockets[1].url.searchParams.get('epoch'), 'e1');
    assert.equal(client.epoch, 'e1');
    assert.deepEqual(log.errors, []);
  });

  test('no since, no epoch in the URL, even when an epoch is known', async () => {
    const { client } = makeClient({ epoch: 'e1' });
    client.connect();
    await flush();
    assert.equal(sockets[0].url.searchParams.get('epoch'), null);
  });

  test('another epoch: reported, and the new history is delivered from its start', async () => {
    const { client, log } = makeClient({ since: 10, epoch: 'old' });
    client.connect();
    await flush();
    sockets[0].connected(12, 'u1', 'new');
    sockets[0].frame({ type: 'resume_failed', oldest_seq: 1 });
    sockets[0].events(1, 2, 12);
    assert.equal(log.errors[0].code, 'epoch_changed');
    assert.equal(log.connected[0].epochChanged, true);
    assert.equal(log.resumeFailed[0].epochChanged, true);
    assert.deepEqual(log.events, [1, 2, 12]);
    assert.equal(client.epoch, 'new');
    assert.equal(client.lastSeq, 12);
  });

  test('before any event, the resume point is the first connection seq', async () => {
    const { log } = await connectedClient({}, 9);
    sockets[0].serverClose(1006);
    mock.timers.tick(lastState(log).delayMs);
    await flush();
    assert.equal(sockets[1].url.searchParams.get('since'), '9');
  });

  for (const [code, why] of [
    [4008, 'slow consumer'],
    [1001, 'going away'],
    [4001, 'token expired'],
    [4429, 'too many connections'],
    [1000, 'normal'],
  ]) {
    test(`close ${code} (${why}) reconnects with since and a fresh token`, async () => {
      const { client, log } = await connectedClient();
      sockets[0].events(1, 2);
      sockets[0].serverClose(code, why);
      assert.equal(client.state, 'reconnecting');
      assert.equal(lastState(log).closeCode, code);
      mock.timers.tick(lastState(log).delayMs);
      await flush();
      assert.equal(sockets.length, 2);
      assert.equal(sockets[1].url.searchParams.get('since'), '2');
      sockets[1].open();
      assert.deepEqual(sockets[1].sent[0], { type: 'auth', token: 'tok-2' });
    });
  }

  test('backoff grows exponentially with jitter, is bounded, and resets once connected', async () => {
    mock.method(Math, 'random', () => 0); // no jitter: the full delay
    const { client, log } = makeClient({
      reconnect: { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2, jitter: 0.5 },
    });
    client.connect();
    await flush();
    const delays = [];
    for (let i = 0; i < 6; i++) {
      sockets.at(-1).serverClose(1006);
      delays.push(lastState(log).delayMs);
      mock.timers.tick(lastState(log).delayMs);
      await flush();
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    sockets.at(-1).connected();
    sockets.at(-1).serverClose(1006);
    assert.equal(lastState(log).delayMs, 100);
    // Full jitter draw: the delay is halved.
    Math.random.mock.mockImplementation(() => 1);
    mock.timers.tick(100);
    await flush();
    sockets.at(-1).serverClose(1006);
    assert.equal(lastState(log).delayMs, 100); // 200 * (1 - 0.5)
  });

  test('the retry waits its delay: no attempt before it', async () => {
    mock.method(Math, 'random', () => 0);
    const { log } = await connectedClient({ reconnect: { initialDelayMs: 1000 } });
    sockets[0].serverClose(1006);
    mock.timers.tick(999);
    await flush();
    assert.equal(sockets.length, 1);
    mock.timers.tick(1);
    await flush();
    assert.equal(sockets.length, 2);
    assert.equal(log.states.at(-1).state, 'connecting');
  });

  test('maxAttempts consecutive failures end in failed', async () => {
    const { client, log } = makeClient({ reconnect: { maxAttempts: 2 } });
    client.connect();
    await flush();
    for (let i = 0; i < 2; i++) {
      sockets.at(-1).serverClose(1006);
      mock.timers.tick(lastState(log).delayMs);
      await flush();
    }
    sockets.at(-1).serverClose(1006);
    assert.equal(client.state, 'failed');
    mock.timers.tick(60_000);
    await flush();
    assert.equal(sockets.length, 3);
  });
});

describe('final closes', () => {
  test('close 4401 is an auth failure: reported, never retried', async () => {
    const { client, log } = makeClient();
    client.connect();
    await flush();
    sockets[0].open();
    sockets[0].frame({ type: 'error', code: 'auth_failed', message: 'bad signature' });
    sockets[0].serverClose(4401, 'authentication failed');
    assert.equal(client.state, 'auth_failed');
    assert.equal(lastState(log).closeCode, 4401);
    assert.equal(lastState(log).error.code, 'auth_failed');
    assert.deepEqual(
      log.errors.map((e) => e.code),
      ['auth_failed'],
    );
    mock.timers.tick(10 * 60_000);
    await flush();
    assert.equal(sockets.length, 1);
    assert.equal(client.stats.attempts, 1);
  });

  test('close 4401 of an open connection (refreshes refused) reconnects with a fresh token once', async () => {
    const { client, log } = await connectedClient();
    sockets[0].frame({ type: 'error', code: 'refresh_failed', message: 'too many failed refreshes' });
    sockets[0].serverClose(4401, 'too many failed refreshes');
    assert.equal(client.state, 'reconnecting');
    mock.timers.tick(60_000);
    await flush();
    assert.equal(sockets.length, 2);
    sockets[1].open();
    await flush();
    assert.equal(sockets[1].sent[0].type, 'auth');
    // The fresh token is refused too: final.
    sockets[1].frame({ type: 'error', code: 'auth_failed', message: 'sub differs' });
    sockets[1].serverClose(4401, 'authentication failed');
    assert.equal(client.state, 'auth_failed');
    assert.equal(lastState(log).closeCode, 4401);
  });

  test('close 4401 after auth_timeout is retried (the token was never judged)', async () => {
    const { client } = makeClient();
    client.connect();
    await flush();
    sockets[0].open();
    sockets[0].frame({ type: 'error', code: 'auth_timeout' });
    sockets[0].serverClose(4401);
    assert.equal(client.state, 'reconnecting');
  });

  test('close 4003 (kicked) stops', async () => {
    const { client, log } = await connectedClient();
    sockets[0].serverClose(4003, 'kicked');
    assert.equal(client.state, 'kicked');
    mock.timers.tick(10 * 60_000);
    await flush();
    assert.equal(sockets.length, 1);
    assert.equal(lastState(log).closeReason, 'kicked');
  });

  test('close() closes with 1000 and stops reconnecting; connect() starts again', async () => {
    const { client } = await connectedClient();
    sockets[0].events(1, 2);
    client.close();
    assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: 'client closed' });
    assert.equal(client.state, 'closed');
    sockets[0].serverClose(1000); // the close event of our own close
    mock.timers.tick(60_000);
    await flush();
    assert.equal(sockets.length, 1);
    client.connect();
    await flush();
    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url.searchParams.get('since'), '2');
  });
});

describe('token refresh', () => {
  test('refreshes in-band before expiry with a fresh token, and again after refreshed', async () => {
    let n = 0;
    const { client, log } = await connectedClient({
      getToken: () => jwt(++n === 1 ? 300 : 600),
      refreshBeforeExpiryMs: 60_000,
    });
    const s = sockets[0];
    mock.timers.tick(240_000 - 1);
    await flush();
    assert.equal(s.sent.length, 1); // auth only
    mock.timers.tick(1);
    await flush();
    const refresh = s.sent[1];
    assert.equal(refresh.type, 'refresh');
    const exp = decodeJwtExp(refresh.token);
    assert.equal(exp, Math.floor(Date.now() / 1000) + 600);
    s.frame({ type: 'refreshed', exp });
    assert.deepEqual(log.refreshed, [exp]);
    assert.equal(client.stats.refreshes, 1);
    mock.timers.tick(540_000);
    await flush();
    assert.equal(s.sent[2].type, 'refresh');
    assert.equal(client.state, 'open');
  });

  test('a short-lived token is refreshed halfway through its life', async () => {
    await connectedClient({ getToken: () => jwt(4) });
    mock.timers.tick(2000);
    await flush();
    assert.equal(sockets[0].sent[1].type, 'refresh');
  });

  test('refresh_failed is reported and retried while the token lives', async () => {
    const { log } = await connectedClient({ getToken: () => jwt(100), refreshBeforeExpiryMs: 60_000 });
    const s = sockets[0];
    mock.timers.tick(50_000);
    await flush();
    assert.equal(s.sent.filter((f) => f.type === 'refresh').length, 1);
    s.frame({ type: 'error', code: 'refresh_failed', message: 'sub differs' });
    assert.equal(log.errors[0].code, 'refresh_failed');
    mock.timers.tick(25_000); // half the remaining 50 s
    await flush();
    assert.equal(s.sent.filter((f) => f.type === 'refresh').length, 2);
  });

  for (const [skewS, why] of [
    [600, 'behind'],
    [-600, 'ahead of'],
  ]) {
    test(`a local clock 10 minutes ${why} the issuer's refreshes on the token's own lifetime`, async () => {
      await connectedClient({ getToken: () => jwt(300, skewS), refreshBeforeExpiryMs: 60_000 });
      const refreshes = () => sockets[0].sent.filter((f) => f.type === 'refresh').length;
      mock.timers.tick(240_000 - 1);
      await flush();
      assert.equal(refreshes(), 0);
      mock.timers.tick(1);
      await flush();
      assert.equal(refreshes(), 1);
      sockets[0].frame({ type: 'refreshed', exp: decodeJwtExp(sockets[0].sent.at(-1).token) });
      mock.timers.tick(240_000 - 1);
      await flush();
      assert.equal(refreshes(), 1, 'no tight loop');
      mock.timers.tick(1);
      await flush();
      assert.equal(refreshes(), 2);
    });
  }

  test('a token without exp is never refreshed', async () => {
    await connectedClient({ getToken: () => 'opaque' });
    mock.timers.tick(3_600_000);
    await flush();
    assert.deepEqual(
      sockets[0].sent.map((f) => f.type),
      ['auth'],
    );
  });

  test('decodeJwtExp reads exp without verifying, and refuses non-JWTs', () => {
    assert.equal(decodeJwtExp(`${b64url({})}.${b64url({ exp: 123, sub: 'ü' })}.x`), 123);
    assert.equal(decodeJwtExp('a.b'), undefined);
    assert.equal(decodeJwtExp(`${b64url({})}.${b64url({ exp: '123' })}.x`), undefined);
    assert.equal(decodeJwtExp('x.%%%.y'), undefined);
  });
});

describe('liveness and acks', () => {
  test('pings periodically; a ping with no answer abandons the socket and reconnects', async () => {
    const { client, log } = await connectedClient({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
    const s = sockets[0];
    mock.timers.tick(1000);
    assert.deepEqual(s.sent.at(-1), { type: 'ping' });
    s.frame({ type: 'pong' });
    mock.timers.tick(1000);
    assert.equal(client.state, 'open');
    mock.timers.tick(500);
    assert.equal(client.state, 'reconnecting');
    assert.equal(log.errors.at(-1).code, 'ping_timeout');
    assert.equal(s.closedWith.code, 1000);
  });

  test('auto-ack sends one ack for a burst, naming its last seq', async () => {
    await connectedClient({ autoAck: true, ackDelayMs: 100 });
    const s = sockets[0];
    s.events(1, 2, 3);
    assert.equal(s.sent.filter((f) => f.type === 'ack').length, 0);
    mock.timers.tick(100);
    assert.deepEqual(
      s.sent.filter((f) => f.type === 'ack'),
      [{ type: 'ack', seq: 3 }],
    );
  });

  test('ack() names only seqs this connection carried, never twice', async () => {
    const { client } = await connectedClient({ since: 10 }, 12);
    const s = sockets[0];
    assert.equal(client.ack(11), false); // nothing carried yet
    s.events(11, 12);
    assert.equal(client.ack(50), true);
    assert.deepEqual(s.sent.at(-1), { type: 'ack', seq: 12 });
    assert.equal(client.ack(12), false);
  });
});
