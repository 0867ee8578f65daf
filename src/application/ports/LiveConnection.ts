import type { Tracer } from "effect"
import type { ConnectionInfo } from "../../domain/Connection.js"

/**
 * A client connection as the use cases drive it (driven port): the WebSocket adapter
 * (`adapters/ws/WsClient`) implements it over a socket; tests implement it over an array.
 * Plain methods, not Effects: the fan-out calls `send` once per recipient per push.
 */
export interface LiveConnection {
  readonly info: ConnectionInfo
  /** Queues a frame; false when the connection is closed or the client is too far behind. */
  readonly send: (frame: Uint8Array) => boolean
  readonly close: (code: number, reason: string) => void
  /** Stops reading the client's frames (back-pressure) until `resumeReads`. */
  readonly pauseReads: () => void
  readonly resumeReads: () => void
  /** The span of the connection's session, made when first asked for; parents its chat spans. */
  readonly sessionSpan?: () => Tracer.AnySpan
}
