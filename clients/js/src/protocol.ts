// The wsgate WebSocket protocol v1 as a browser sees it: the frames the
// sidecar sends (events and control frames), the frames a client sends, and
// the close codes. Types only, plus the few constant lists they derive from;
// the behaviour lives in client.ts. The contract is docs/DESIGN.md.

/** Any JSON value: what an event's `payload` holds, verbatim from the backend. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** The five critical events of an agent run, in the order a run emits them. */
export const CRITICAL_EVENT_TYPES = [
  'agent_started',
  'agent_thinking',
  'tool_executing',
  'tool_completed',
  'agent_completed',
] as const;

export type CriticalEventType = (typeof CRITICAL_EVENT_TYPES)[number];

/** The event names the sidecar defines; any other name is a backend's custom type. */
export type StandardEventType = CriticalEventType | 'agent_error';

/**
 * One event frame. `seq` is the per-user sequence number (1, 2, 3, ... with
 * no gaps on a connection); `ts` is microseconds since the Unix epoch, when
 * the sidecar accepted the event.
 */
export interface EventFrame<T extends string = string, P = JsonValue> {
  type: T;
  seq: number;
  event_id: string;
  user_id: string;
  thread_id: string;
  run_id: string;
  ts: number;
  payload: P;
}

export type AgentStartedEvent = EventFrame<'agent_started'>;
export type AgentThinkingEvent = EventFrame<'agent_thinking'>;
export type ToolExecutingEvent = EventFrame<'tool_executing'>;
export type ToolCompletedEvent = EventFrame<'tool_completed'>;
export type AgentCompletedEvent = EventFrame<'agent_completed'>;
export type AgentErrorEvent = EventFrame<'agent_error'>;
/** An event whose `type` is a backend-chosen name ([a-z0-9_.-], 1-64 bytes). */
export type CustomEventFrame = EventFrame<string>;

export interface StandardEventMap {
  agent_started: AgentStartedEvent;
  agent_thinking: AgentThinkingEvent;
  tool_executing: ToolExecutingEvent;
  tool_completed: ToolCompletedEvent;
  agent_completed: AgentCompletedEvent;
  agent_error: AgentErrorEvent;
}

export type StandardEvent = StandardEventMap[StandardEventType];

/** Every event a client can receive. Narrow with isStandardEvent(). */
export type WsgateEvent = StandardEvent | CustomEventFrame;

const STANDARD_EVENT_NAMES: ReadonlySet<string> = new Set<string>([
  ...CRITICAL_EVENT_TYPES,
  'agent_error',
]);

export function isStandardEvent(ev: WsgateEvent): ev is StandardEvent {
  return STANDARD_EVENT_NAMES.has(ev.type);
}

/** First frame of every authenticated connection. */
export interface ConnectedFrame {
  type: 'connected';
  conn_id: string;
  user_id: string;
  /** Highest seq assigned to this user when the connection opened (0: none). */
  seq: number;
  /** Names the history the seqs belong to; send it back with since (`&epoch=`). */
  epoch?: string;
}

/** Part of the requested resume range is no longer retained. */
export interface ResumeFailedFrame {
  type: 'resume_failed';
  oldest_seq: number;
}

export interface ErrorFrame {
  type: 'error';
  code: string;
  message?: string;
}

export interface RefreshedFrame {
  type: 'refreshed';
  /** The connection's new expiry, Unix seconds. */
  exp: number;
}

export interface PongFrame {
  type: 'pong';
}

export type ControlFrame =
  | ConnectedFrame
  | ResumeFailedFrame
  | ErrorFrame
  | RefreshedFrame
  | PongFrame;

/** Frame types that are never events (and never custom type names). */
export const CONTROL_FRAME_TYPES: ReadonlySet<string> = new Set([
  'connected',
  'resume_failed',
  'error',
  'refreshed',
  'pong',
]);

/** Close codes the sidecar uses beyond the standard ones. */
export const CloseCode = {
  /** Sidecar shutting down (or the connection was idle): reconnect. */
  GOING_AWAY: 1001,
  /** The connection's token expired: reconnect with a fresh token. */
  TOKEN_EXPIRED: 4001,
  /** Kicked by an operator: do not reconnect. */
  KICKED: 4003,
  /** Slow consumer: reconnect with ?since=, nothing is lost. */
  SLOW_CONSUMER: 4008,
  /** Authentication failed or timed out: do not retry with the same token. */
  AUTH_FAILED: 4401,
  /** Too many connections for this user: retry later. */
  TOO_MANY_CONNECTIONS: 4429,
} as const;
