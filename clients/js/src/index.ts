// Public surface of the wsgate browser client: the client class, its option
// and callback types, and the protocol's frame and event types.

export { WsgateClient } from './client.js';
export type {
  ClientStats,
  ConnectedInfo,
  ConnectionState,
  EventHandlers,
  ReconnectPolicy,
  ResumeFailedInfo,
  SocketCloseInfo,
  StateChange,
  WebSocketLike,
  WsgateClientOptions,
  WsgateError,
} from './client.js';
export { decodeJwtExp } from './jwt.js';
export { CloseCode, CRITICAL_EVENT_TYPES, isStandardEvent } from './protocol.js';
export type {
  AgentCompletedEvent,
  AgentErrorEvent,
  AgentStartedEvent,
  AgentThinkingEvent,
  ConnectedFrame,
  CriticalEventType,
  CustomEventFrame,
  ErrorFrame,
  EventFrame,
  JsonValue,
  RefreshedFrame,
  ResumeFailedFrame,
  StandardEvent,
  StandardEventMap,
  StandardEventType,
  ToolCompletedEvent,
  ToolExecutingEvent,
  WsgateEvent,
} from './protocol.js';
