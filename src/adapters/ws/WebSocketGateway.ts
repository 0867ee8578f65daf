import { Context, Deferred, Duration, Effect, Exit, Layer, Option, Runtime, Schedule } from "effect"
import type { Tracer } from "effect"
import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { WebSocket, WebSocketServer } from "ws"
import { Authenticator } from "../../application/Authenticator.js"
import type { Principal } from "../../application/Authenticator.js"
import type { LiveConnection } from "../../application/ConnectionHub.js"
import { ConnectionHub } from "../../application/ConnectionHub.js"
import type { ConnectionSession } from "../../application/Dispatcher.js"
import { Dispatcher } from "../../application/Dispatcher.js"
import { Metrics } from "../../application/ports/Metrics.js"
import type { MetricsShape } from "../../application/ports/Metrics.js"
import { Readiness } from "../../application/Readiness.js"
import { CloseCodes } from "../../domain/Connection.js"
import type { ConnectionInfo } from "../../domain/Connection.js"
import type { AuthError, FailureCode } from "../../domain/Errors.js"
import { failureCodeOfAuth, failureCodes } from "../../domain/Errors.js"
import { clientKeyOf } from "../../domain/RateLimit.js"
import { tokenFromAuthorization } from "../../domain/Token.js"
import { directAddressing } from "../net/ClientAddress.js"
import { NodeServer } from "../net/NodeServer.js"

export interface WebSocketOptions {
  readonly path: string
  /** Largest frame accepted; `ws` itself closes with 1009 above it. */
  readonly maxMessageSize: number
  readonly pingInterval: Duration.DurationInput
  /** A connection with no pong and no frame for this long is dropped. */
  readonly pongTimeout: Duration.DurationInput
  /** Bytes queued in the kernel/ws buffer for one client before it is disconnected as slow. */
  readonly sendBufferLimit: number
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  readonly maxDevicesPerUser: number
  readonly compression: {
    readonly enabled: boolean
    readonly threshold: number
    readonly concurrencyLimit: number
  }
  /** Seconds over which clients are closed on shutdown, so they do not all reconnect at once. */
  readonly drainSeconds: number
  /**
   * `reconnect`: a drained socket is cut without a close frame, which the official web client (it
   * reconnects only when `!event.wasClean`) answers by reconnecting; `clean`: close 1012.
   */
  readonly closeMode: "reconnect" | "clean"
  /** Client address of an upgrade request (proxy-aware) and whether it may connect at all. */
  readonly clientIp: (request: Http.IncomingMessage) => string
  readonly ipAllowed: (ip: string) => boolean
}

export const defaultWebSocketOptions: WebSocketOptions = {
  path: "/ws",
  maxMessageSize: 1024 * 1024,
  pingInterval: "30 seconds",
  pongTimeout: "60 seconds",
  sendBufferLimit: 4 * 1024 * 1024,
  maxConnections: 0,
  maxConnectionsPerIp: 0,
  maxDevicesPerUser: 0,
  compression: { enabled: false, threshold: 1024, concurrencyLimit: 4 },
  drainSeconds: 0,
  closeMode: "clean",
  clientIp: directAddressing.clientIp,
  ipAllowed: directAddressing.ipAllowed
}

/** Shared by every connection of one gateway; a client keeps only a pointer to it. */
interface GatewayContext {
  readonly options: WebSocketOptions
  readonly metrics: MetricsShape
  readonly onClosed: (client: WsClient) => void
}

const kClient = Symbol("resonance.client")

/**
 * One client socket. Methods live on the prototype and the socket's listeners are shared
 * functions, so an idle connection costs a few small objects beyond what `ws` holds.
 */
class WsClient implements LiveConnection {
  handle: ConnectionSession | undefined = undefined
  lastSeen: number

  constructor(
    readonly ws: WebSocket,
    readonly info: ConnectionInfo,
    /** The WebSocket session's span, made on the first chat: an idle socket holds none. */
    private readonly makeSpan: (client: WsClient) => Tracer.Span,
    private readonly gateway: GatewayContext
  ) {
    this.lastSeen = info.connectedAt
    ;(ws as unknown as Record<symbol, WsClient>)[kClient] = this
    ws.on("message", onMessage)
    ws.on("pong", onPong)
    ws.on("error", onError)
    ws.on("close", onClose)
  }

  send(frame: Uint8Array): boolean {
    const { ws } = this
    if (ws.readyState !== WebSocket.OPEN) return false
    if (ws.bufferedAmount > this.gateway.options.sendBufferLimit) {
      // A client that does not read cannot take a close frame either: cut it off.
      this.gateway.metrics.connectionRejected("slow_consumer")
      ws.terminate()
      return false
    }
    ws.send(frame)
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

  span: Tracer.Span | undefined = undefined

  sessionSpan(): Tracer.Span {
    return (this.span ??= this.makeSpan(this))
  }

  closed(): void {
    this.handle?.close()
    this.gateway.onClosed(this)
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
  client.handle?.receive(data as Buffer)
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

function destroySocket(this: Duplex) {
  this.destroy()
}

export interface WebSocketGatewayShape {
  readonly connectionCount: () => number
  /** Refuses new upgrades and closes every client (as `closeMode` says), spread over `drainSeconds`. */
  readonly drain: Effect.Effect<void>
}

export class WebSocketGateway extends Context.Tag("resonance/WebSocketGateway")<
  WebSocketGateway,
  WebSocketGatewayShape
>() {}

/** Answers an upgrade with an HTTP error; its status is the failure code's (the domain's table). */
const rejectUpgrade = (socket: Duplex, code: FailureCode, message: string, extraHeaders: Record<string, string> = {}) => {
  if (socket.destroyed) return
  const status = failureCodes[code].http
  const body = JSON.stringify({ code, message })
  const headers = [
    `HTTP/1.1 ${status} ${Http.STATUS_CODES[status] ?? "Error"}`,
    "Connection: close",
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(extraHeaders).map(([k, v]) => `${k}: ${v}`)
  ]
  socket.end(`${headers.join("\r\n")}\r\n\r\n${body}`)
}

/** `?token=` as the official client sends it, else the Authorization header. */
const accessToken = (request: Http.IncomingMessage, url: URL): string | undefined => {
  const fromQuery = url.searchParams.get("token")
  if (fromQuery !== null && fromQuery !== "") return fromQuery
  return tokenFromAuthorization(request.headers.authorization)
}

/**
 * The WebSocket entry point. It owns the `upgrade` event of the shared server and its own `ws`
 * server, so frame size, compression, pings and backpressure are ours to set.
 */
export const layer = (options: WebSocketOptions) =>
  Layer.scoped(
    WebSocketGateway,
    Effect.gen(function*() {
      const { server } = yield* NodeServer
      const authenticator = yield* Authenticator
      const dispatcher = yield* Dispatcher
      const hub = yield* ConnectionHub
      const metrics = yield* Metrics
      const readiness = yield* Readiness
      const runtime = yield* Effect.runtime<never>()
      const runFork = Runtime.runFork(runtime)
      const tracer = yield* Effect.tracer
      const clock = yield* Effect.clock

      const pingMs = Duration.toMillis(Duration.decode(options.pingInterval))
      const pongMs = Duration.toMillis(Duration.decode(options.pongTimeout))
      const wss = new WebSocketServer({
        noServer: true,
        clientTracking: false,
        maxPayload: options.maxMessageSize,
        perMessageDeflate: options.compression.enabled
          ? {
            threshold: options.compression.threshold,
            concurrencyLimit: options.compression.concurrencyLimit,
            serverNoContextTakeover: true,
            clientNoContextTakeover: true,
            zlibDeflateOptions: { level: 1, memLevel: 7 }
          }
          : false
      })

      const clients = new Set<WsClient>()
      const perIp = new Map<string, number>()
      let pending = 0
      let accepting = true
      let nextId = 1
      let allClosed: Deferred.Deferred<void> | undefined

      // Counted per client key: an IPv6 address by its /64.
      const releaseIp = (ip: string) => {
        const key = clientKeyOf(ip)
        const count = (perIp.get(key) ?? 1) - 1
        if (count <= 0) perIp.delete(key)
        else perIp.set(key, count)
      }

      const refuse = (socket: Duplex, code: FailureCode, reason: string, message: string, headers?: Record<string, string>) => {
        metrics.connectionRejected(reason)
        rejectUpgrade(socket, code, message, headers)
      }

      const gateway: GatewayContext = {
        options,
        metrics,
        onClosed: (client) => {
          clients.delete(client)
          releaseIp(client.info.remoteAddress)
          client.span?.end(clock.unsafeCurrentTimeNanos(), Exit.void)
          if (allClosed !== undefined && clients.size === 0) Deferred.unsafeDone(allClosed, Exit.void)
        }
      }

      /** One span for the life of a connection, from its connect time: every chat frame's span is its child. */
      const sessionSpan = (client: WsClient): Tracer.Span => {
        const startNanos = BigInt(client.info.connectedAt) * 1_000_000n
        const span = tracer.span("WebSocket.session", Option.none(), Context.empty(), [], startNanos, "server")
        span.attribute("user.name", client.info.username)
        span.attribute("net.peer.ip", client.info.remoteAddress)
        span.attribute("ws.connection_id", client.info.id)
        return span
      }

      const open = (ws: WebSocket, principal: Principal, ip: string) => {
        const id = nextId++
        const info: ConnectionInfo = {
          id,
          username: principal.username,
          remoteAddress: ip,
          connectedAt: Date.now(),
          expiresAt: principal.expiresAt,
          tokenId: principal.tokenId
        }
        const client = new WsClient(ws, info, sessionSpan, gateway)
        clients.add(client)

        if (options.maxDevicesPerUser > 0) {
          const devices = hub.connectionsOf(principal.username)
          if (devices !== undefined && devices.size >= options.maxDevicesPerUser) {
            let excess = devices.size - options.maxDevicesPerUser + 1
            for (const oldest of devices) {
              if (excess-- <= 0) break
              oldest.close(CloseCodes.DeviceLimit, "device limit reached: a newer device connected")
            }
          }
        }
        client.handle = dispatcher.open(client)
      }

      const admit = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
        const url = new URL(request.url ?? "/", "http://gateway")
        if (url.pathname !== options.path) return refuse(socket, "not_found", "not_found", "no websocket endpoint here")
        if (!accepting || readiness.isDraining()) {
          return refuse(socket, "unavailable", "draining", "gateway is shutting down", { "Retry-After": "1" })
        }
        const ip = options.clientIp(request)
        if (!options.ipAllowed(ip)) return refuse(socket, "permission_denied", "ip_denied", "address not allowed")
        if (options.maxConnections > 0 && clients.size + pending >= options.maxConnections) {
          return refuse(socket, "unavailable", "global_limit", "gateway is at its connection limit", { "Retry-After": "5" })
        }
        const ipKey = clientKeyOf(ip)
        const fromIp = perIp.get(ipKey) ?? 0
        if (options.maxConnectionsPerIp > 0 && fromIp >= options.maxConnectionsPerIp) {
          return refuse(socket, "resource_exhausted", "ip_limit", "too many connections from this address", { "Retry-After": "5" })
        }
        perIp.set(ipKey, fromIp + 1)
        pending++
        const token = accessToken(request, url)
        runFork(
          authenticator.authenticate(token).pipe(
            Effect.match({
              onFailure: (error: AuthError) => {
                pending--
                releaseIp(ip)
                const code = failureCodeOfAuth(error)
                refuse(socket, code, code === "unavailable" ? "auth_unavailable" : "unauthenticated", error.message)
              },
              onSuccess: (principal) => {
                pending--
                if (!accepting || socket.destroyed) {
                  releaseIp(ip)
                  if (!socket.destroyed) refuse(socket, "unavailable", "draining", "gateway is shutting down")
                  return
                }
                wss.handleUpgrade(request, socket, head, (ws) => open(ws, principal, ip))
              }
            }),
            Effect.withSpan("WebSocket.upgrade", { captureStackTrace: false })
          )
        )
      }

      const onUpgrade = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
        socket.on("error", destroySocket)
        try {
          admit(request, socket, head)
        } catch (error) {
          runFork(Effect.logError("upgrade failed", { error: String(error) }))
          socket.destroy()
        }
      }

      server.on("upgrade", onUpgrade)

      // Pinging every socket at once stalls the event loop for tens of milliseconds per 10,000
      // sockets, so each ping interval is cut into slices (one a second) that visit a share each.
      const slices = Math.min(30, Math.max(1, Math.floor(pingMs / 1000)))
      let slice = 0
      const sweep = Effect.sync(() => {
        const now = Date.now()
        slice = (slice + 1) % slices
        for (const client of clients) {
          if (client.info.id % slices !== slice) continue
          if (now - client.lastSeen > pongMs) {
            client.ws.terminate()
          } else if (client.ws.readyState === WebSocket.OPEN) {
            client.ws.ping()
          }
        }
      })
      yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(Duration.millis(pingMs / slices))))

      const drain = Effect.gen(function*() {
        accepting = false
        if (clients.size === 0) return
        const done = yield* Deferred.make<void>()
        allClosed = done
        const snapshot = [...clients]
        const spreadMs = Math.max(0, options.drainSeconds * 1000)
        yield* Effect.forEach(
          snapshot,
          (client, index) =>
            Effect.sleep(Duration.millis(snapshot.length > 1 ? (spreadMs * index) / snapshot.length : 0)).pipe(
              Effect.zipRight(client.handle?.drain("2 seconds") ?? Effect.void),
              Effect.zipRight(Effect.sync(() =>
                options.closeMode === "clean"
                  ? client.close(CloseCodes.ServiceRestart, "service restart")
                  : client.ws.terminate()
              ))
            ),
          { concurrency: "unbounded", discard: true }
        )
        // Bounded so that spread + drain + close stay inside shutdown.timeout_seconds.
        yield* Deferred.await(done).pipe(Effect.timeout("3 seconds"), Effect.ignore)
        for (const client of clients) client.ws.terminate()
      }).pipe(Effect.withSpan("WebSocket.drain"))

      yield* Effect.addFinalizer(() =>
        drain.pipe(
          Effect.zipRight(
            Effect.sync(() => {
              server.off("upgrade", onUpgrade)
              wss.close()
            })
          ),
          Effect.zipRight(Effect.logInfo("websocket gateway drained"))
        )
      )

      return { connectionCount: () => clients.size, drain }
    })
  )
