import { Context, Layer } from "effect"

/**
 * Counting on the hot path: every method is a plain call (a lookup and an add), never an Effect.
 */
export interface MetricsShape {
  readonly connectionOpened: () => void
  readonly connectionClosed: () => void
  readonly connectionRejected: (reason: string) => void
  /** A SyncStatus batch Logic acknowledged, with the events it carried. */
  readonly presenceBatch: (events: number) => void
  readonly pulse: () => void
  readonly messageReceived: () => void
  readonly messagesSent: (frames: number) => void
  readonly pushFailed: (users: number) => void
  readonly pushDuration: (seconds: number) => void
  readonly httpRequest: (route: string, code: number, seconds: number) => void
  readonly grpcRequest: (method: string, code: string, seconds: number) => void
  /** A store's running totals, read when metrics are collected (the embedded Logic's SQL). */
  readonly storage: (read: () => StorageTotals) => void
  /** One flush of the embedded Logic's WAL to disk: the acks of its commits waited for it. */
  readonly walFlush: (seconds: number) => void
  /** One checkpoint of the embedded Logic's WAL into its database file (a worker thread's). */
  readonly walCheckpoint: (seconds: number) => void
}

export interface StorageTotals {
  readonly statements: number
  readonly rowsWritten: number
  readonly transactions: number
}

export class Metrics extends Context.Tag("resonance/Metrics")<Metrics, MetricsShape>() {
  static readonly noop: MetricsShape = {
    connectionOpened: () => {},
    connectionClosed: () => {},
    connectionRejected: () => {},
    presenceBatch: () => {},
    pulse: () => {},
    messageReceived: () => {},
    messagesSent: () => {},
    pushFailed: () => {},
    pushDuration: () => {},
    httpRequest: () => {},
    grpcRequest: () => {},
    storage: () => {},
    walFlush: () => {},
    walCheckpoint: () => {}
  }
  /** Nothing counted: metrics switched off (`observability.metrics.enabled: false`). */
  static readonly layerNoop: Layer.Layer<Metrics> = Layer.succeed(Metrics, Metrics.noop)
  /** Counts nothing but what a test overrides (e.g. a recorder of the calls it asserts on). */
  static readonly layerTest = (overrides: Partial<MetricsShape> = {}): Layer.Layer<Metrics> =>
    Layer.succeed(Metrics, { ...Metrics.noop, ...overrides })
}
