import { Config, Context, Deferred, Effect, Either, Exit, Layer, Option, Runtime } from "effect"
import type { Duration, Tracer } from "effect"
import type * as Http from "node:http"
import type { Duplex } from "node:stream"
import type { WebSocket } from "ws"
import { WebSocketServer } from "ws"
import { makeAdmission } from "../../application/Admission.js"
import { Authenticator } from "../../application/Authenticator.js"
import type { Principal } from "../../application/Authenticator.js"
import { ConnectionHub } from "../../application/ConnectionHub.js"
import { Dispatcher } from "../../application/Dispatcher.js"
import { Metrics } from "../../application/ports/Metrics.js"
import { Readiness } from "../../application/Readiness.js"
import type { ConnectionInfo } from "../../domain/Connection.js"
import type { FailureCode } from "../../domain/Errors.js"
import { AuthError, failureCodeOfAuth } from "../../domain/Errors.js"
import { clientAddressingConfig, directAddressing } from "../platform/net/ClientAddress.js"
import { bool, duration, int, num, str } from "../platform/config/Settings.js"
import * as NodeServer from "../platform/net/NodeServer.js"
import { drainClients } from "./Drain.js"
import { forkHeartbeat } from "./Heartbeat.js"
import { rejectUpgrade, upgradeToken } from "./Upgrade.js"
import { WireFrameCache } from "./WireFrame.js"
import type { ClientContext } from "./WsClient.js"
import { destroySocket, WsClient } from "./WsClient.js"

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
  /** Upgrades whose token goes to Logic at once; past it they wait in a queue of `upgradeQueue` (then 503). */
  readonly upgradeConcurrency: number
  readonly upgradeQueue: number
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
  upgradeConcurrency: 64,
  upgradeQueue: 8192,
  clientIp: directAddressing.clientIp,
  ipAllowed: directAddressing.ipAllowed
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

/**
 * The WebSocket entry point. It owns the `upgrade` event of the shared server and its own `ws`
 * server, so frame size, compression, pings and backpressure are ours to set.
 */
export const layer = (options: WebSocketOptions) =>
  Layer.scoped(
    WebSocketGateway,
    Effect.gen(function*() {
      const node = yield* NodeServer.NodeServer
      const { server } = node
      const authenticator = yield* Authenticator
      const dispatcher = yield* Dispatcher
      const hub = yield* ConnectionHub
      const metrics = yield* Metrics
      const readiness = yield* Readiness
      const runtime = yield* Effect.runtime<never>()
      const runFork = Runtime.runFork(runtime)
      const tracer = yield* Effect.tracer
      const clock = yield* Effect.clock

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
      const admission = makeAdmission(options, hub)
      let accepting = true
      let nextId = 1
      let allClosed: Deferred.Deferred<void> | undefined

      const refuse = (socket: Duplex, code: FailureCode, reason: string, message: string, headers?: Record<string, string>) => {
        metrics.connectionRejected(reason)
        rejectUpgrade(socket, code, message, headers)
      }

      const context: ClientContext = {
        sendBufferLimit: options.sendBufferLimit,
        metrics,
        frames: new WireFrameCache(),
        onClosed: (client) => {
          clients.delete(client)
          admission.disconnected(client.info.remoteAddress)
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

      const open = (ws: WebSocket, socket: Duplex, principal: Principal, ip: string) => {
        const info: ConnectionInfo = {
          id: nextId++,
          username: principal.username,
          remoteAddress: ip,
          connectedAt: Date.now(),
          expiresAt: principal.expiresAt,
          tokenId: principal.tokenId
        }
        const client = new WsClient(ws, socket, info, sessionSpan, context)
        clients.add(client)
        admission.connected(principal.username)
        client.session = dispatcher.open(client)
      }

      /** Opens the socket of an upgrade whose token was judged (`result`), or refuses it saying why. */
      const settle = (request: Http.IncomingMessage, socket: Duplex, head: Buffer, ip: string, result: Principal | AuthError) => {
        if (result instanceof AuthError) {
          admission.abandon(ip)
          const code = failureCodeOfAuth(result)
          return refuse(socket, code, code === "unavailable" ? "auth_unavailable" : "unauthenticated", result.message)
        }
        if (!accepting || socket.destroyed) {
          admission.abandon(ip)
          if (!socket.destroyed) refuse(socket, "unavailable", "draining", "gateway is shutting down")
          return
        }
        admission.authenticated()
        node.trust(socket)
        wss.handleUpgrade(request, socket, head, (ws) => open(ws, socket, result, ip))
      }

      // Tokens nothing here can check go to Logic, a few at once; in a storm the rest wait their
      // turn (a refusal would cost the official client one of its five tries).
      const waiting: Array<() => void> = []
      let asking = 0
      const askLogic = (request: Http.IncomingMessage, socket: Duplex, head: Buffer, ip: string, token: string | undefined) => {
        const ask = () => {
          if (socket.destroyed) {
            admission.abandon(ip)
            return next()
          }
          asking++
          runFork(Effect.either(authenticator.authenticate(token))).addObserver((exit) => {
            asking--
            settle(request, socket, head, ip, Exit.isSuccess(exit)
              ? Either.merge(exit.value)
              : new AuthError({ reason: "Unavailable", message: "cannot authenticate now" }))
            next()
          })
        }
        if (asking < options.upgradeConcurrency) return ask()
        if (waiting.length >= options.upgradeQueue) {
          admission.abandon(ip)
          return refuse(socket, "unavailable", "upgrade_queue_full", "too many connections at once, retry shortly", { "Retry-After": "1" })
        }
        waiting.push(ask)
      }
      const next = () => {
        while (asking < options.upgradeConcurrency && waiting.length > 0) waiting.shift()!()
      }

      const admit = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => {
        const target = request.url ?? "/"
        const query = target.indexOf("?")
        if ((query === -1 ? target : target.slice(0, query)) !== options.path) {
          return refuse(socket, "not_found", "not_found", "no websocket endpoint here")
        }
        if (!accepting || readiness.isDraining()) {
          return refuse(socket, "unavailable", "draining", "gateway is shutting down", { "Retry-After": "1" })
        }
        const ip = options.clientIp(request)
        if (!options.ipAllowed(ip)) return refuse(socket, "permission_denied", "ip_denied", "address not allowed")
        const retryAfter = node.admitRequest(request, ip)
        if (retryAfter > 0) {
          return refuse(socket, "resource_exhausted", "rate_limited", "too many requests from this address", {
            "Retry-After": String(retryAfter)
          })
        }
        const refusal = admission.begin(ip)
        if (refusal === "global_limit") {
          return refuse(socket, "unavailable", refusal, "gateway is at its connection limit", { "Retry-After": "5" })
        }
        if (refusal === "ip_limit") {
          return refuse(socket, "resource_exhausted", refusal, "too many connections from this address", { "Retry-After": "5" })
        }
        const token = upgradeToken(request, query === -1 ? "" : target.slice(query + 1))
        // A token judged here (a known answer, a local signature check) costs no fiber and no span.
        const known = authenticator.authenticateNow(token)
        if (known === undefined) return askLogic(request, socket, head, ip, token)
        settle(request, socket, head, ip, known)
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
      yield* forkHeartbeat(clients, options.pingInterval, options.pongTimeout)

      const drain = Effect.gen(function*() {
        accepting = false
        if (clients.size === 0) return
        allClosed = yield* Deferred.make<void>()
        yield* drainClients(clients, allClosed, options)
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

/** `ws_config.*` that the socket server reads (`max_pending_bytes` belongs to the Dispatcher). */
export const wsSocketSettings = Config.nested(
  Config.all({
    path: str("path", "/ws"),
    maxMessageSize: int("max_message_size", 1024 * 1024),
    pingInterval: duration("ping_interval", "30s"),
    pongTimeout: duration("pong_timeout", "60s"),
    sendBufferLimit: int("send_buffer_limit", 4 * 1024 * 1024),
    upgradeConcurrency: int("upgrade_concurrency", 64),
    upgradeQueue: int("upgrade_queue", 8192),
    compression: Config.nested(
      Config.all({
        enabled: bool("enabled", false),
        threshold: int("threshold", 1024),
        concurrencyLimit: int("concurrency_limit", 4)
      }),
      "compression"
    )
  }),
  "ws_config"
)

/** `limits.*` checked before an upgrade. */
export const wsLimitSettings = Config.nested(
  Config.all({
    maxConnections: int("max_connections", 0),
    maxConnectionsPerIp: int("max_connections_per_ip", 100),
    maxDevicesPerUser: int("max_devices_per_user", 5)
  }),
  "limits"
)

/** `shutdown.*` of the WebSocket drain. */
export const wsDrainSettings = Config.nested(
  Config.all({
    drainSeconds: num("drain_seconds", 3),
    closeMode: Config.literal("reconnect", "clean")("close_mode").pipe(Config.withDefault("reconnect" as const))
  }),
  "shutdown"
)

/** The WebSocket options from `ws_config`, `limits`, `shutdown` and `security`; a bad address list fails naming its key. */
export const wsOptionsConfig = Effect.flatMap(
  Config.all({ ws: wsSocketSettings, limits: wsLimitSettings, shutdown: wsDrainSettings }),
  ({ limits, shutdown, ws }) =>
    Effect.map(clientAddressingConfig, (addressing): WebSocketOptions => ({
      ...ws,
      ...limits,
      ...shutdown,
      clientIp: addressing.clientIp,
      ipAllowed: addressing.ipAllowed
    }))
)

/** The WebSocket entry point as `ws_config`, `limits`, `shutdown` and `security` say. */
export const layerConfig = Layer.unwrapEffect(Effect.map(wsOptionsConfig, (options) => layer(options)))
