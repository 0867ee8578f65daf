import type * as Net from "node:net"

/** What the front door is made of and what a listener's guard offers (the mechanics are in ./Overload.ts). */

/** `normal`; `elevated` from the pressure threshold: timeouts of strangers shrink; `critical` near the budget: strangers are shed. */
export type PressureLevel = "normal" | "elevated" | "critical"

export interface FrontDoorOptions {
  /** The process's descriptor limit (its soft `RLIMIT_NOFILE`). */
  readonly maxOpenFiles: number
  /** Connections of every listener together; below `maxOpenFiles`, leaving room for files, clients and etcd. */
  readonly connectionBudget: number
  /** The share of a budget (connections, heap, RSS) from which the pressure is `elevated`. */
  readonly pressureThreshold: number
  readonly maxHeapBytes: number
  readonly maxRssBytes: number
  /** How often deadlines and memory are checked; default 250 ms. */
  readonly sweepIntervalMs?: number
  /** Where `maxOpenFiles` came from, for the start-up line. */
  readonly limitSource?: string
}

export interface ListenerPolicy {
  /** `http`, `push`, `logic`, `metrics`: the label of its counts. */
  readonly name: string
  /** Connections of this listener at once, within the process budget. */
  readonly maxConnections: number
  /** Per client key (an IPv4 address, an IPv6 /64); 0: no cap. */
  readonly maxPerAddress: number
  /** A connection that has shown nothing (no complete request, no credentials) is closed after this. */
  readonly handshakeTimeoutMs: number
  /** A stranger with nothing in flight is closed after this; 0: left to the protocol server. */
  readonly idleTimeoutMs: number
  /** A trusted connection with nothing in flight is closed after this; 0: never. */
  readonly trustedIdleTimeoutMs: number
  /** Untrusted connections are closed at the handshake deadline even while busy (credentials, not requests, open the door). */
  readonly requiresCredentials: boolean
  /** Peers never capped per address (trusted proxies, whose clients all share their address). */
  readonly exempt?: (ip: string) => boolean
  /** Keep connections findable by their peer (`address:port`), for `trustPeer`. */
  readonly byPeer?: boolean
  /** What a connection hears when its handshake deadline passes (e.g. HTTP's 408) before it is closed. */
  readonly farewell?: Uint8Array
}

export type ShedReason = "budget" | "listener_full" | "per_address" | "banned" | "handshake_timeout" | "idle_timeout" | "memory"

export interface ListenerStats {
  readonly name: string
  readonly open: number
  readonly fresh: number
  readonly trusted: number
  /** Connections refused or closed by the front door since start, by reason. */
  readonly closed: Readonly<Record<string, number>>
}

export interface FrontDoorStats {
  readonly maxOpenFiles: number
  readonly connectionBudget: number
  readonly open: number
  readonly level: PressureLevel
  /** The highest of connections, heap and RSS against their budgets. */
  readonly pressure: number
  readonly listeners: ReadonlyArray<ListenerStats>
}

export interface Listener {
  readonly policy: ListenerPolicy
  /** Guards a server's connections from now on: its `connection` event, before the protocol sees them. */
  readonly guard: (server: Net.Server) => void
  /** Admits a socket accepted elsewhere; false when it was refused (and destroyed). */
  readonly admit: (socket: Net.Socket) => boolean
  /** A request (or stream) began / ended on the connection. */
  readonly requestStarted: (socket: Net.Socket) => void
  readonly requestEnded: (socket: Net.Socket) => void
  /** The connection presented valid credentials: never shed, no handshake deadline. */
  readonly trust: (socket: Net.Socket) => void
  /** `trust` for a connection known by its peer, `address:port` (a listener with `byPeer`). */
  readonly trustPeer: (peer: string) => void
  /**
   * Refuses new connections from the socket's client key for `ms` and closes this one: at once, or
   * after `graceMs` (time for a farewell its owner has written, such as an HTTP/2 GOAWAY, to leave).
   */
  readonly ban: (socket: Net.Socket, ms: number, graceMs?: number) => void
  /** Requests in flight on the connection (for pipelining caps); 0 for a socket not guarded. */
  readonly inFlight: (socket: Net.Socket) => number
  readonly stats: () => ListenerStats
}

export interface FrontDoorShape {
  readonly options: FrontDoorOptions
  /** A listener's guard, for the life of the FrontDoor; its policy's caps are clamped to the budget. */
  readonly listener: (policy: ListenerPolicy) => Listener
  readonly level: () => PressureLevel
  /** Called on every change of level (and once at once), e.g. to shrink a server's own timeouts. */
  readonly onLevel: (f: (level: PressureLevel) => void) => () => void
  readonly stats: () => FrontDoorStats
}
