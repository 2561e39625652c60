// WsgateClient: one logical connection of a browser to the wsgate sidecar,
// kept alive across network drops, sidecar restarts and token expiry.
//
// The big idea: the sidecar numbers each user's events 1, 2, 3, ... and can
// replay any retained range (?since=N). So the client remembers the last seq
// it delivered, resumes from it on every reconnect, and drops anything at or
// below it: the application sees each event once, in order, whatever the
// network did. The seqs belong to a history named by `connected.epoch`; the
// client sends it back (&epoch=E) so that a sidecar with another history (a
// new database) answers resume_failed and starts it from the beginning. Each connection attempt is an `Attempt` object; callbacks of
// a socket that is no longer the current attempt are ignored, which is what
// keeps late events of a dead socket from interleaving with the next one.

import { tokenDeadline } from './jwt.js';
import {
  CloseCode,
  CONTROL_FRAME_TYPES,
  isStandardEvent,
  type ConnectedFrame,
  type CustomEventFrame,
  type ErrorFrame,
  type JsonValue,
  type StandardEventMap,
  type StandardEventType,
  type WsgateEvent,
} from './protocol.js';

/**
 * - `idle`: constructed, connect() not called yet.
 * - `connecting`: fetching a token, opening the socket, authenticating.
 * - `open`: the sidecar said `connected`; events flow.
 * - `reconnecting`: waiting out a backoff delay before the next attempt.
 * - `closed`: close() was called.
 * - `auth_failed`: the sidecar refused the token of a new connection
 *   (4401); no retry. A 4401 of an open connection (its in-band refreshes
 *   were refused three times) reconnects with a fresh token instead.
 * - `kicked`: an operator closed the connection (4003); no retry.
 * - `failed`: gave up (maxAttempts reached, or an unusable URL).
 * The last four are final until connect() is called again.
 */
export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'open'
  | 'reconnecting'
  | 'closed'
  | 'auth_failed'
  | 'kicked'
  | 'failed';

/** Something that went wrong without (necessarily) ending the connection. */
export interface WsgateError {
  /**
   * The sidecar's error code (`auth_failed`, `auth_timeout`,
   * `too_many_connections`, `refresh_failed`, `invalid_json`,
   * `backend_unavailable`, `invalid_ack`, `already_authenticated`, ...) or
   * one of the client's own: `token_error` (getToken threw or returned no
   * string), `handler_error` (an application callback threw),
   * `invalid_frame`, `seq_reset` (the sidecar's seq went backwards: its log
   * was reset), `connect_timeout`, `ping_timeout`, `invalid_url`.
   */
  code: string;
  message: string;
  cause?: unknown;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Consecutive failed attempts so far (0 once connected). */
  attempt: number;
  /** `reconnecting`: milliseconds until the next attempt. */
  delayMs?: number;
  /** The close that caused this change, if one did. */
  closeCode?: number;
  closeReason?: string;
  /** The error that caused this change, if one did. */
  error?: WsgateError;
}

export interface ConnectedInfo {
  connId: string;
  userId: string;
  /** Highest seq the sidecar had assigned to this user when it connected. */
  serverSeq: number;
  /** The `since` this connection resumed from, if any. */
  resumedFrom: number | undefined;
  /** The history the seqs belong to (`connected.epoch`); undefined from a sidecar without epochs. */
  epoch: string | undefined;
  /** The sidecar's epoch is not the one the resume point came from: its seqs start over. */
  epochChanged: boolean;
}

export interface ResumeFailedInfo {
  /** The `since` that was asked for. */
  requestedSince: number;
  /** Oldest seq the sidecar still has; replay starts there. */
  oldestSeq: number;
  /** Events requestedSince+1 .. oldestSeq-1 are gone for good. */
  lostFrom: number;
  lostTo: number;
  /**
   * The sidecar has another history (epoch) than the resume point: every
   * event after requestedSince of the old one is lost, and the replay that
   * follows starts the new one (lostFrom/lostTo do not apply).
   */
  epochChanged: boolean;
}

export interface ReconnectPolicy {
  /** Delay before the first retry (ms). Default 500. */
  initialDelayMs: number;
  /** Upper bound of any delay (ms). Default 30000. */
  maxDelayMs: number;
  /** Growth per consecutive failure. Default 2. */
  multiplier: number;
  /** Fraction of each delay that is randomised away (0..1). Default 0.5: a delay d becomes uniform in [d/2, d]. */
  jitter: number;
  /** Consecutive failed attempts before giving up (`failed`). Default Infinity. */
  maxAttempts: number;
}

/** Handlers for the six standard event types, each typed for its event. */
export type EventHandlers = {
  [K in StandardEventType]?: (event: StandardEventMap[K]) => void;
};

/** The close information a socket reports. */
export interface SocketCloseInfo {
  code: number;
  reason: string;
}

/**
 * The part of the WebSocket interface the client uses, so that tests (and
 * Node users with another WebSocket implementation) can supply their own.
 */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: SocketCloseInfo) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface WsgateClientOptions {
  /** `ws://host:port/ws` or `wss://...`; a relative URL resolves against the page. Never put a token in it. */
  url: string;
  /**
   * Returns a JWT for this user. Called before every connection attempt and
   * for every in-band refresh, so return a fresh token (cache it yourself if
   * your token endpoint is expensive).
   */
  getToken: () => string | Promise<string>;
  /** Every event, after its type's handler. Each seq is delivered at most once, in increasing order. */
  onEvent?: (event: WsgateEvent) => void;
  /** Per-type handlers for the standard events. */
  handlers?: EventHandlers;
  /** Per-type handlers for custom event types, keyed by the type name. */
  customHandlers?: Record<string, (event: CustomEventFrame) => void>;
  onStateChange?: (change: StateChange) => void;
  onConnected?: (info: ConnectedInfo) => void;
  /** Part of the resume range was no longer retained: those events are lost. */
  onResumeFailed?: (info: ResumeFailedInfo) => void;
  /** The sidecar accepted a refreshed token; `exp` is the connection's new expiry (Unix seconds). */
  onRefreshed?: (exp: number) => void;
  onError?: (error: WsgateError) => void;
  /** Resume point to start from (e.g. a last seq you persisted); default: none (pending events only). */
  since?: number;
  /** The epoch `since` belongs to (persisted with it, from `client.epoch`). */
  epoch?: string;
  /** Ack delivered events automatically (`{"type":"ack","seq":N}`, batched). Default false. */
  autoAck?: boolean;
  /** Batching window of auto-acks (ms). Default 250. */
  ackDelayMs?: number;
  reconnect?: Partial<ReconnectPolicy>;
  /** Refresh the token this long before it expires (ms); at most half its remaining life. Default 60000. */
  refreshBeforeExpiryMs?: number;
  /** Send `{"type":"ping"}` this often while open (ms); 0 disables. Default 25000. */
  pingIntervalMs?: number;
  /** No frame at all this long after a ping (ms): the connection is dead, reconnect. Default 10000. */
  pongTimeoutMs?: number;
  /** No `connected` frame this long after an attempt starts (ms): retry. Default 15000. */
  connectTimeoutMs?: number;
  /** Opens a socket; default `new WebSocket(url)`. */
  createSocket?: (url: string) => WebSocketLike;
}

/** Counters, mostly for tests and diagnostics. */
export interface ClientStats {
  /** Connection attempts started (each getToken + socket). */
  attempts: number;
  /** Attempts that reached `connected`. */
  connections: number;
  eventsDelivered: number;
  /** Event frames dropped because their seq was already delivered. */
  duplicatesDropped: number;
  /** Refreshes the sidecar confirmed. */
  refreshes: number;
}

const DEFAULT_RECONNECT: ReconnectPolicy = {
  initialDelayMs: 500,
  maxDelayMs: 30000,
  multiplier: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
};

/** Shortest wait before a refresh, so a token that is already due cannot make a tight loop. */
const MIN_REFRESH_DELAY_MS = 1000;

type Timer = ReturnType<typeof setTimeout>;

/** What a state change carries beyond the states and the attempt count. */
type ChangeInfo = Omit<StateChange, 'state' | 'previous' | 'attempt'>;

/** One connection attempt: its socket and everything that dies with it. */
class Attempt {
  connected = false;
  connId = '';
  /** The error code the sidecar sent before closing, if any (auth_failed ...). */
  serverError: string | undefined;
  /** Highest seq this socket carried: the most an ack may name. */
  maxSeqReceived = 0;
  ackedSeq = 0;
  /** When the token in use expires, on the local clock (ms); undefined: never refreshed. */
  tokenDeadline: number | undefined;
  /** Deadline of the token sent in a refresh frame, in force once `refreshed` arrives. */
  pendingDeadline: number | undefined;
  connectTimer: Timer | undefined;
  pingTimer: Timer | undefined;
  pongTimer: Timer | undefined;
  refreshTimer: Timer | undefined;
  ackTimer: Timer | undefined;

  /** The sidecar said our epoch was not its own (resume_failed follows). */
  epochChanged = false;

  constructor(
    readonly socket: WebSocketLike,
    readonly token: string,
    readonly since: number | undefined,
    /** The epoch sent with since, if any. */
    readonly epoch: string | undefined,
    receivedAt: number,
  ) {
    this.tokenDeadline = tokenDeadline(token, receivedAt);
  }

  clearTimers(): void {
    for (const t of [this.connectTimer, this.pingTimer, this.pongTimer, this.refreshTimer, this.ackTimer]) {
      if (t !== undefined) clearTimeout(t);
    }
    this.connectTimer = this.pingTimer = this.pongTimer = this.refreshTimer = this.ackTimer = undefined;
  }
}

function defaultCreateSocket(url: string): WebSocketLike {
  // The DOM's handler types are narrower than WebSocketLike's (MessageEvent,
  // CloseEvent); the fields the client reads exist on both.
  return new WebSocket(url) as unknown as WebSocketLike;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class WsgateClient {
  private readonly opts: WsgateClientOptions;
  private readonly policy: ReconnectPolicy;
  private _state: ConnectionState = 'idle';
  /** Last seq delivered to the application; nothing at or below it is delivered again. */
  private _lastSeq: number | undefined;
  /** `connected.seq` of the first connection, the resume point until an event arrives. */
  private baselineSeq: number | undefined;
  /** `connected.epoch` of the last connection (or the one given): the history of the seqs above. */
  private _epoch: string | undefined;
  private current: Attempt | undefined;
  /** Bumped by connect() and close(): async work of an older generation stops. */
  private generation = 0;
  private failures = 0;
  private retryTimer: Timer | undefined;
  private readonly _stats: ClientStats = {
    attempts: 0,
    connections: 0,
    eventsDelivered: 0,
    duplicatesDropped: 0,
    refreshes: 0,
  };

  constructor(options: WsgateClientOptions) {
    if (typeof options.getToken !== 'function') throw new TypeError('WsgateClient: getToken is required');
    if (typeof options.url !== 'string' || options.url === '') throw new TypeError('WsgateClient: url is required');
    if (options.since !== undefined && !(Number.isInteger(options.since) && options.since >= 0)) {
      throw new TypeError('WsgateClient: since must be an integer >= 0');
    }
    this.opts = options;
    this.policy = { ...DEFAULT_RECONNECT, ...options.reconnect };
    this._lastSeq = options.since;
    this._epoch = options.epoch;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** Last seq delivered (or the `since` given); persist it to resume a later page load. */
  get lastSeq(): number | undefined {
    return this._lastSeq;
  }

  /** The epoch lastSeq belongs to; persist it with lastSeq and pass both back. */
  get epoch(): string | undefined {
    return this._epoch;
  }

  /** The current connection's id while open. */
  get connId(): string | undefined {
    return this.current?.connected ? this.current.connId : undefined;
  }

  get stats(): Readonly<ClientStats> {
    return { ...this._stats };
  }

  /** Starts connecting (and reconnecting as needed). No-op if already active. */
  connect(): void {
    if (this._state === 'connecting' || this._state === 'open' || this._state === 'reconnecting') return;
    this.generation++;
    this.failures = 0;
    void this.startAttempt();
  }

  /** Closes the connection for good (code 1000) and stops reconnecting. */
  close(): void {
    this.generation++;
    this.stopRetry();
    this.dropCurrent(1000, 'client closed');
    this.setState('closed', {});
  }

  /**
   * Acks events up to `seq` on the current connection (the sidecar records
   * them as `acked`). Only seqs this connection carried can be acked; a
   * larger seq is lowered to the highest one. Returns whether a frame was sent.
   */
  ack(seq: number): boolean {
    const a = this.current;
    if (!a || !a.connected) return false;
    return this.sendAck(a, Math.min(seq, a.maxSeqReceived));
  }

  /**
   * Sends a client message, forwarded to the backends (the sidecar consumes
   * `ping`, `ack`, `auth` and `refresh` itself). Returns false when not open.
   */
  send(message: JsonValue): boolean {
    const a = this.current;
    if (!a || !a.connected) return false;
    a.socket.send(JSON.stringify(message));
    return true;
  }

  /** Refreshes the token in-band now instead of waiting for the schedule. */
  refreshToken(): void {
    const a = this.current;
    if (a && a.connected) void this.refresh(a);
  }

  // --- attempts ---

  private async startAttempt(): Promise<void> {
    const gen = this.generation;
    this.retryTimer = undefined;
    this._stats.attempts++;
    this.setState('connecting', {});
    let token: string;
    try {
      token = await this.opts.getToken();
      if (typeof token !== 'string' || token === '') throw new TypeError('getToken returned no token');
    } catch (e) {
      if (gen !== this.generation) return;
      const error = this.tokenError(e);
      this.report(error);
      this.retry({ error });
      return;
    }
    if (gen !== this.generation) return;
    const since = this._lastSeq ?? this.baselineSeq;
    const epoch = since === undefined ? undefined : this._epoch;
    let socket: WebSocketLike;
    try {
      socket = (this.opts.createSocket ?? defaultCreateSocket)(this.resumeUrl(since, epoch));
    } catch (e) {
      this.finish('failed', { error: { code: 'invalid_url', message: String(e), cause: e } });
      return;
    }
    const a = new Attempt(socket, token, since, epoch, Date.now());
    this.current = a;
    a.connectTimer = setTimeout(
      () => this.abandon(a, { code: 'connect_timeout', message: 'no connected frame in time' }),
      this.opts.connectTimeoutMs ?? 15000,
    );
    socket.onopen = () => {
      // First-message auth: the token never appears in a URL or header.
      if (this.current === a) socket.send(JSON.stringify({ type: 'auth', token: a.token }));
    };
    socket.onmessage = (ev) => {
      if (this.current === a) this.onFrame(a, ev.data);
    };
    socket.onclose = (ev) => {
      if (this.current === a) this.onSocketClosed(a, ev.code, ev.reason);
    };
    socket.onerror = () => {
      /* a close event follows and carries what we act on */
    };
  }

  private resumeUrl(since: number | undefined, epoch: string | undefined): string {
    const base = (globalThis as { location?: { href: string } }).location?.href;
    const url = new URL(this.opts.url, base);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    if (since !== undefined) url.searchParams.set('since', String(since));
    else url.searchParams.delete('since');
    if (epoch !== undefined) url.searchParams.set('epoch', epoch);
    else url.searchParams.delete('epoch');
    return url.toString();
  }

  /** What a close code means for this client: see CloseCode. */
  private onSocketClosed(a: Attempt, code: number, reason: string): void {
    this.detach(a);
    const info = { closeCode: code, closeReason: reason };
    if (code === CloseCode.KICKED) {
      this.finish('kicked', info);
    } else if (
      a.serverError === 'auth_failed' ||
      (code === CloseCode.AUTH_FAILED && a.serverError !== 'auth_timeout' && !a.connected)
    ) {
      // The token of a new connection was refused: getToken would most
      // likely hand out the same kind of token again, and hammering the
      // sidecar helps nobody. An open connection closed 4401 had its
      // refreshes refused (e.g. a token of another user): a new connection
      // judges a fresh token once, and ends here if that one is refused.
      this.finish('auth_failed', {
        ...info,
        error: { code: 'auth_failed', message: reason || 'authentication failed' },
      });
    } else {
      // 1001 restart, 1006 network, 4001 expired token (a fresh one comes
      // from getToken), 4401 after refused refreshes (likewise), 4008 slow
      // consumer (the log has everything),
      // 4429 too many connections, auth_timeout: all retried with backoff.
      this.retry(info);
    }
  }

  /** Gives up on a socket that looks dead, without waiting for its close. */
  private abandon(a: Attempt, error: WsgateError): void {
    if (this.current !== a) return;
    this.detach(a);
    try {
      a.socket.close(1000, error.code);
    } catch {
      /* already closing */
    }
    this.report(error);
    this.retry({ closeCode: 1006, closeReason: error.code, error });
  }

  private retry(info: ChangeInfo): void {
    this.failures++;
    if (this.failures > this.policy.maxAttempts) {
      this.finish('failed', info);
      return;
    }
    const p = this.policy;
    const base = Math.min(p.maxDelayMs, p.initialDelayMs * Math.pow(p.multiplier, this.failures - 1));
    const jitter = Math.min(1, Math.max(0, p.jitter));
    const delayMs = Math.round(base * (1 - jitter * Math.random()));
    this.setState('reconnecting', { ...info, delayMs });
    this.retryTimer = setTimeout(() => void this.startAttempt(), delayMs);
  }

  /** Enters a final state: no socket, no timer. */
  private finish(state: ConnectionState, info: ChangeInfo): void {
    this.generation++;
    this.stopRetry();
    this.dropCurrent(1000, state);
    this.setState(state, info);
  }

  private stopRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private dropCurrent(code: number, reason: string): void {
    const a = this.current;
    if (!a) return;
    this.detach(a);
    try {
      a.socket.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  private detach(a: Attempt): void {
    a.clearTimers();
    a.socket.onopen = a.socket.onmessage = a.socket.onclose = a.socket.onerror = null;
    if (this.current === a) this.current = undefined;
  }

  // --- frames ---

  private onFrame(a: Attempt, data: unknown): void {
    let frame: unknown;
    try {
      frame = typeof data === 'string' ? JSON.parse(data) : undefined;
    } catch {
      frame = undefined;
    }
    if (!isObject(frame) || typeof frame['type'] !== 'string') {
      this.report({ code: 'invalid_frame', message: 'frame is not a JSON object with a type' });
      return;
    }
    // Anything at all proves the connection alive.
    if (a.pongTimer !== undefined) clearTimeout(a.pongTimer);
    a.pongTimer = undefined;
    const type = frame['type'];
    if (!CONTROL_FRAME_TYPES.has(type)) {
      if (typeof frame['seq'] === 'number') this.onEventFrame(a, frame as unknown as WsgateEvent);
      return; // an unknown control frame from a newer sidecar
    }
    switch (type) {
      case 'connected':
        this.onConnected(a, frame as unknown as ConnectedFrame);
        break;
      case 'resume_failed':
        this.onResumeFailed(a, Number(frame['oldest_seq']));
        break;
      case 'refreshed':
        this.onRefreshed(a, Number(frame['exp']));
        break;
      case 'error':
        this.onServerError(a, frame as unknown as ErrorFrame);
        break;
      default: // pong: already counted as a sign of life
        break;
    }
  }

  private onConnected(a: Attempt, f: ConnectedFrame): void {
    if (a.connectTimer !== undefined) clearTimeout(a.connectTimer);
    a.connectTimer = undefined;
    a.connected = true;
    a.connId = f.conn_id;
    const epoch = typeof f.epoch === 'string' ? f.epoch : undefined;
    if (a.epoch !== undefined && epoch !== undefined && epoch !== a.epoch) {
      // Another history (e.g. a new database): our seqs mean nothing to
      // it. It sends resume_failed and replays everything it has.
      a.epochChanged = true;
      this.report({
        code: 'epoch_changed',
        message: `sidecar's epoch ${epoch} is not ${a.epoch}: its history starts over`,
      });
      if (this._lastSeq !== undefined) this._lastSeq = 0;
      if (this.baselineSeq !== undefined) this.baselineSeq = 0;
    }
    if (epoch !== undefined) this._epoch = epoch;
    if (this._lastSeq !== undefined && f.seq < this._lastSeq) {
      // The sidecar has never assigned the seqs we delivered: its log was
      // reset. Its new events would all look like duplicates; start over.
      this.report({
        code: 'seq_reset',
        message: `sidecar's last seq ${f.seq} is below the last delivered ${this._lastSeq}`,
      });
      this._lastSeq = f.seq;
    }
    if (this._lastSeq === undefined && this.baselineSeq === undefined) this.baselineSeq = f.seq;
    this.failures = 0;
    this._stats.connections++;
    this.setState('open', {});
    this.call(this.opts.onConnected, {
      connId: f.conn_id,
      userId: f.user_id,
      serverSeq: f.seq,
      resumedFrom: a.since,
      epoch,
      epochChanged: a.epochChanged,
    });
    if (this.current !== a) return; // a callback closed us
    this.scheduleRefresh(a);
    this.schedulePing(a);
  }

  private onEventFrame(a: Attempt, ev: WsgateEvent): void {
    if (ev.seq > a.maxSeqReceived) a.maxSeqReceived = ev.seq;
    if (this._lastSeq !== undefined && ev.seq <= this._lastSeq) {
      this._stats.duplicatesDropped++;
      return;
    }
    this._lastSeq = ev.seq;
    this._stats.eventsDelivered++;
    if (isStandardEvent(ev)) {
      const h = this.opts.handlers?.[ev.type] as ((e: WsgateEvent) => void) | undefined;
      this.call(h, ev);
    } else {
      this.call(this.opts.customHandlers?.[ev.type], ev);
    }
    this.call(this.opts.onEvent, ev);
    if (this.opts.autoAck && this.current === a && a.ackTimer === undefined) {
      a.ackTimer = setTimeout(() => {
        a.ackTimer = undefined;
        this.sendAck(a, a.maxSeqReceived);
      }, this.opts.ackDelayMs ?? 250);
    }
  }

  private onResumeFailed(a: Attempt, oldestSeq: number): void {
    const requestedSince = a.since ?? 0;
    this.call(this.opts.onResumeFailed, {
      requestedSince,
      oldestSeq,
      lostFrom: requestedSince + 1,
      lostTo: oldestSeq - 1,
      epochChanged: a.epochChanged,
    });
  }

  private onServerError(a: Attempt, f: ErrorFrame): void {
    const code = String(f.code);
    if (code === 'auth_failed' || code === 'auth_timeout' || code === 'too_many_connections') {
      a.serverError = code; // the close that follows is judged by it
    }
    if (code === 'refresh_failed') {
      a.pendingDeadline = undefined;
      this.scheduleRefreshRetry(a);
    }
    this.report({ code, message: typeof f.message === 'string' ? f.message : code });
  }

  // --- token refresh ---

  private scheduleRefresh(a: Attempt): void {
    if (a.refreshTimer !== undefined) clearTimeout(a.refreshTimer);
    a.refreshTimer = undefined;
    if (a.tokenDeadline === undefined) return;
    const remaining = a.tokenDeadline - Date.now();
    const margin = Math.min(this.opts.refreshBeforeExpiryMs ?? 60000, Math.max(0, remaining) / 2);
    const delay = Math.max(MIN_REFRESH_DELAY_MS, remaining - margin);
    a.refreshTimer = setTimeout(() => void this.refresh(a), delay);
  }

  /** After a failed refresh: try again while the token has life left. */
  private scheduleRefreshRetry(a: Attempt): void {
    if (a.tokenDeadline === undefined) return;
    const remaining = a.tokenDeadline - Date.now();
    if (remaining <= 0) return; // the sidecar closes with 4001; the reconnect gets a fresh token
    if (a.refreshTimer !== undefined) clearTimeout(a.refreshTimer);
    const delay = Math.max(MIN_REFRESH_DELAY_MS, Math.min(30000, remaining / 2));
    a.refreshTimer = setTimeout(() => void this.refresh(a), delay);
  }

  private async refresh(a: Attempt): Promise<void> {
    a.refreshTimer = undefined;
    let token: string;
    try {
      token = await this.opts.getToken();
      if (typeof token !== 'string' || token === '') throw new TypeError('getToken returned no token');
    } catch (e) {
      if (this.current !== a) return;
      this.report(this.tokenError(e));
      this.scheduleRefreshRetry(a);
      return;
    }
    if (this.current !== a || !a.connected) return;
    a.pendingDeadline = tokenDeadline(token, Date.now());
    a.socket.send(JSON.stringify({ type: 'refresh', token }));
  }

  private onRefreshed(a: Attempt, exp: number): void {
    // The sidecar's exp is the new token's own; the deadline computed when
    // the token arrived also allows for this machine's clock.
    a.tokenDeadline = a.pendingDeadline ?? (Number.isFinite(exp) ? exp * 1000 : undefined);
    a.pendingDeadline = undefined;
    this._stats.refreshes++;
    this.call(this.opts.onRefreshed, exp);
    if (this.current === a) this.scheduleRefresh(a);
  }

  // --- liveness and acks ---

  private schedulePing(a: Attempt): void {
    const every = this.opts.pingIntervalMs ?? 25000;
    if (every <= 0) return;
    a.pingTimer = setTimeout(() => {
      if (this.current !== a) return;
      a.socket.send('{"type":"ping"}');
      if (a.pongTimer === undefined) {
        a.pongTimer = setTimeout(
          () => this.abandon(a, { code: 'ping_timeout', message: 'no answer to ping' }),
          this.opts.pongTimeoutMs ?? 10000,
        );
      }
      this.schedulePing(a);
    }, every);
  }

  private sendAck(a: Attempt, seq: number): boolean {
    if (this.current !== a || !a.connected || seq <= a.ackedSeq) return false;
    a.ackedSeq = seq;
    a.socket.send(JSON.stringify({ type: 'ack', seq }));
    return true;
  }

  // --- reporting ---

  private setState(state: ConnectionState, info: ChangeInfo): void {
    const previous = this._state;
    if (previous === state && state !== 'reconnecting') return;
    this._state = state;
    this.call(this.opts.onStateChange, { state, previous, attempt: this.failures, ...info });
  }

  private tokenError(e: unknown): WsgateError {
    return { code: 'token_error', message: `getToken failed: ${String(e)}`, cause: e };
  }

  private report(error: WsgateError): void {
    const cb = this.opts.onError;
    if (!cb) return;
    try {
      cb(error);
    } catch {
      /* an error handler that throws has nowhere left to report to */
    }
  }

  /** Runs an application callback; its exception is reported, never thrown into the socket's handler. */
  private call<T>(cb: ((arg: T) => void) | undefined, arg: T): void {
    if (!cb) return;
    try {
      cb(arg);
    } catch (e) {
      this.report({ code: 'handler_error', message: String(e), cause: e });
    }
  }
}
