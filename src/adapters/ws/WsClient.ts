import type { Tracer } from "effect"
import type { Duplex } from "node:stream"
import { WebSocket } from "ws"
import type { LiveConnection } from "../../application/ports/LiveConnection.js"
import type { ConnectionSession } from "../../application/Dispatcher.js"
import type { MetricsShape } from "../../application/ports/Metrics.js"
import type { ConnectionInfo } from "../../domain/Connection.js"
import { CloseCodes } from "../../domain/Connection.js"
import type { WireFrameCache } from "./WireFrame.js"

/** What every client of one gateway shares; a client keeps only a pointer to it. */
export interface ClientContext {
  /** Bytes queued for one client before it is disconnected as slow. */
  readonly sendBufferLimit: number
  readonly metrics: MetricsShape
  readonly onClosed: (client: WsClient) => void
  /** The wire form of the payload being fanned out, shared by every client of the gateway. */
  readonly frames: WireFrameCache
}

const kClient = Symbol("resonance.client")

/**
 * One client socket: the WebSocket adapter's connection. Methods live on the prototype and the
 * socket's listeners are shared functions, so an idle connection costs a few small objects beyond
 * what `ws` holds.
 */
export class WsClient implements LiveConnection {
  session: ConnectionSession | undefined = undefined
  lastSeen: number
  span: Tracer.Span | undefined = undefined

  /**
   * The upgraded socket, written directly when no extension was negotiated: `ws` then writes
   * every frame of its own synchronously, so frames cannot interleave. Compressed connections go
   * through `ws.send`, which may queue behind a deflate.
   */
  private readonly raw: Duplex | undefined

  constructor(
    readonly ws: WebSocket,
    socket: Duplex,
    readonly info: ConnectionInfo,
    /** The WebSocket session's span, made on the first chat: an idle socket holds none. */
    private readonly makeSpan: (client: WsClient) => Tracer.Span,
    private readonly context: ClientContext
  ) {
    this.lastSeen = info.connectedAt
    this.raw = ws.extensions === "" ? socket : undefined
    ;(ws as unknown as Record<symbol, WsClient>)[kClient] = this
    ws.on("message", onMessage)
    ws.on("pong", onPong)
    ws.on("error", onError)
    ws.on("close", onClose)
  }

  send(frame: Uint8Array): boolean {
    const { raw, ws } = this
    if (ws.readyState !== WebSocket.OPEN) return false
    // Without an extension everything this client is sent is queued on the socket itself, so its
    // queue is the socket's: fewer objects read per frame than `ws.bufferedAmount`.
    if ((raw !== undefined ? raw.writableLength : ws.bufferedAmount) > this.context.sendBufferLimit) {
      // A client that does not read cannot take a close frame either: cut it off.
      this.context.metrics.connectionRejected("slow_consumer")
      ws.terminate()
      return false
    }
    if (raw !== undefined) raw.write(this.context.frames.of(frame))
    else ws.send(frame)
    return true
  }

  close(code: number, reason: string): void {
    const { ws } = this
    if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return
    ws.close(code, reason)
    // A peer that never answers the close handshake is cut off.
    setTimeout(terminate, 5_000, ws).unref()
  }

  pauseReads(): void {
    this.ws.pause()
  }

  resumeReads(): void {
    this.ws.resume()
  }

  sessionSpan(): Tracer.Span {
    return (this.span ??= this.makeSpan(this))
  }

  closed(): void {
    this.session?.close()
    this.context.onClosed(this)
  }
}

const clientOf = (ws: WebSocket) => (ws as unknown as Record<symbol, WsClient>)[kClient]!

function terminate(ws: WebSocket) {
  ws.terminate()
}

function onMessage(this: WebSocket, data: unknown, isBinary: boolean) {
  const client = clientOf(this)
  client.lastSeen = Date.now()
  if (!isBinary) {
    client.close(CloseCodes.UnsupportedData, "binary protobuf frames only")
    return
  }
  client.session?.receive(data as Buffer)
}

function onPong(this: WebSocket) {
  clientOf(this).lastSeen = Date.now()
}

function onError(this: WebSocket) {
  // `close` follows every error; nothing to do but not crash.
}

function onClose(this: WebSocket) {
  clientOf(this).closed()
}

/** An `error` listener for a raw upgrade socket: destroys it instead of crashing. */
export function destroySocket(this: Duplex) {
  this.destroy()
}
