/** Commands the orchestrator sends the load process over IPC, and what each answers. */

export interface PairSpec {
  readonly sessionId: string
  readonly a: number
  readonly b: number
}

export interface ConnectResult {
  readonly opened: number
  readonly failed: number
  /** From the first connect initiated to the last socket open. */
  readonly elapsedMs: number
  readonly firstError: string
}

export interface CountResult {
  readonly count: number
  /** performance.now() of the load process at the first and last counted frame. */
  readonly firstAt: number
  readonly lastAt: number
}

export interface LevelResult {
  readonly offeredRate: number
  /** Chats actually sent per second in the measured window (the client may fall behind). */
  readonly sentRate: number
  readonly sent: number
  /** Chats in the measured window (after the warm-up), and how many of their pushes arrived. */
  readonly measured: number
  readonly received: number
  readonly ackErrors: number
  readonly firstAckError: string
  /** Latency percentiles in milliseconds over the pushes of the measured window. */
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  /** Pushes received per second over the measured window. */
  readonly deliveredRate: number
  /** The load process's own event-loop delay during the level (a stall here inflates every latency). */
  readonly loadLoopLagMaxMs: number
  readonly loadLoopLagP99Ms: number
}

export interface RoomResult {
  readonly rate: number
  /** Sent, warm-up included. */
  readonly messages: number
  readonly measured: number
  /** Connected members other than the sender: who should receive each message. */
  readonly receivers: number
  readonly deliveries: number
  readonly expectedDeliveries: number
  readonly ackErrors: number
  readonly firstAckError: string
  /** Per delivery of a measured message: intended send → received, ms. */
  readonly p50: number
  readonly p99: number
  readonly max: number
}

export interface SaturationResult {
  readonly acked: number
  readonly ackErrors: number
  readonly firstAckError: string
  readonly elapsedMs: number
  readonly ackedPerSecond: number
}

export type LoadCommand =
  | {
    readonly cmd: "users"
    readonly usernames: ReadonlyArray<string>
    readonly tokens: ReadonlyArray<string>
    readonly pairs: ReadonlyArray<PairSpec>
  }
  | {
    readonly cmd: "connect"
    readonly url: string
    readonly from: number
    readonly count: number
    /** Handshakes in flight at once; 0 starts them all at once (a storm). */
    readonly concurrency: number
    readonly localAddresses: ReadonlyArray<string>
    readonly timeoutMs: number
  }
  | { readonly cmd: "closeAll" }
  /** Closes the sockets of users `from` and up. */
  | { readonly cmd: "closeFrom"; readonly from: number }
  | {
    readonly cmd: "room"
    readonly sessionId: string
    readonly rate: number
    /** Messages come from users 0..senders−1 in turn. */
    readonly senders: number
    readonly warmupMs: number
    readonly durationMs: number
    readonly drainMs: number
  }
  /** Waits until no frame has arrived for `quietMs`: the backlog of an overloaded level has drained. */
  | { readonly cmd: "quiet"; readonly quietMs: number; readonly timeoutMs: number }
  | { readonly cmd: "countBegin" }
  | { readonly cmd: "countEnd"; readonly expected: number; readonly timeoutMs: number }
  | {
    readonly cmd: "e2e"
    readonly rate: number
    readonly warmupMs: number
    readonly durationMs: number
    readonly drainMs: number
  }
  | {
    readonly cmd: "saturate"
    /** Chats each sender keeps unacknowledged. */
    readonly window: number
    readonly warmupMs: number
    readonly durationMs: number
  }

export interface LoadResults {
  readonly users: { readonly users: number }
  readonly connect: ConnectResult
  readonly closeAll: { readonly closed: number }
  readonly closeFrom: { readonly closed: number; readonly open: number }
  readonly room: RoomResult
  readonly quiet: { readonly waitedMs: number; readonly drained: boolean }
  readonly countBegin: Record<string, never>
  readonly countEnd: CountResult
  readonly e2e: LevelResult
  readonly saturate: SaturationResult
}

export interface LoadRequest {
  readonly id: number
  readonly command: LoadCommand
}

export type LoadReply =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string }

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export const percentile = (sorted: ArrayLike<number>, p: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}
