import { Config, Context, Duration, Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import type { Duplex } from "node:stream"
import { clientKeyOf, makeKeyedRateLimiter } from "../../../domain/RateLimit.js"
import { duration, int, num, serviceSettings } from "../config/Settings.js"
import type { ClientAddressing } from "./ClientAddress.js"
import { clientAddressingConfig, directAddressing } from "./ClientAddress.js"
import * as FrontDoor from "./FrontDoor.js"
import type { PressureLevel } from "./FrontDoor.js"

export interface NodeServerOptions {
  readonly port: number
  readonly host?: string
  /** A client must send its request headers within this (slowloris); default 10 s. */
  readonly headersTimeoutMs?: number
  /** ... and the whole request within this; default 30 s. WebSockets are not affected once upgraded. */
  readonly requestTimeoutMs?: number
  /** Sockets of this listener at once, WebSockets included; default (0) the process's connection budget. */
  readonly maxConnections?: number
  /** Sockets from one client key (IPv4 address, IPv6 /64) at once; trusted proxies are exempt. Default 256; 0 = no cap. */
  readonly maxConnectionsPerIp?: number
  /** Requests (upgrades included) one client address may make per second, and the burst above; 0 = unlimited. */
  readonly requestsPerIpPerSecond?: number
  readonly requestBurst?: number
  /** Requests in flight on one connection (pipelined) past which it is cut; default 16. */
  readonly maxPipelinedRequests?: number
  /** The kernel's queue of connections not yet accepted; default net.core.somaxconn. */
  readonly listenBacklog?: number
  /** Client addresses (proxy-aware) and trusted proxies; default the socket's peer, no proxies. */
  readonly addressing?: ClientAddressing
}

/** Refusals in a row on one connection after which its address is turned away for a while. */
const STRIKES = 20
const BAN_MS = 10_000

/** `http.*`: how long a client may take, how many sockets and requests a client gets. */
export const httpServerSettings = Config.nested(
  Config.all({
    headersTimeout: duration("headers_timeout", "10s"),
    requestTimeout: duration("request_timeout", "30s"),
    maxConnections: int("max_connections", 0),
    maxConnectionsPerIp: int("max_connections_per_ip", 256),
    requestsPerIpPerSecond: num("requests_per_ip_per_second", 100),
    requestBurst: num("request_burst", 200),
    maxPipelinedRequests: int("max_pipelined_requests", 16),
    listenBacklog: int("listen_backlog", 0)
  }),
  "http"
)

/** The kernel's cap on a listen backlog (what a larger request is cut to); Node's default of 511 elsewhere. */
export const somaxconn = (): number => {
  try {
    const value = Number(Fs.readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim())
    return Number.isInteger(value) && value > 0 ? value : 511
  } catch {
    return 511
  }
}

/** The server's options from `service.http_port`, `service.bind_host`, `http.*` and `security.*`. */
export const nodeServerOptionsConfig = Effect.flatMap(
  Config.all({ service: serviceSettings, http: httpServerSettings }),
  ({ http, service }) =>
    Effect.map(clientAddressingConfig, (addressing): NodeServerOptions => ({
      port: service.httpPort,
      host: service.bindHost,
      headersTimeoutMs: Duration.toMillis(http.headersTimeout),
      requestTimeoutMs: Duration.toMillis(http.requestTimeout),
      maxConnections: http.maxConnections,
      maxConnectionsPerIp: http.maxConnectionsPerIp,
      requestsPerIpPerSecond: http.requestsPerIpPerSecond,
      requestBurst: http.requestBurst,
      maxPipelinedRequests: http.maxPipelinedRequests,
      listenBacklog: http.listenBacklog,
      addressing
    }))
)

export type RequestHandler = (request: Http.IncomingMessage, response: Http.ServerResponse) => void
export type UpgradeHandler = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void

export interface NodeServerShape {
  readonly server: Http.Server
  readonly port: number
  readonly host: string
  /** The proxy-aware, normalized client address of a request. */
  readonly clientIp: (request: Http.IncomingMessage) => string
  /**
   * Spends one request of the budget of `ip` (the request's `clientIp`, which the caller has in
   * hand): 0 when it may be served, else the seconds to wait. A refusal counts against the
   * connection: a run of them turns its address away.
   */
  readonly admitRequest: (request: Http.IncomingMessage, ip: string) => number
  /** The upgraded connection presented valid credentials: the front door never sheds it. */
  readonly trust: (socket: Duplex) => void
}

const kStrikes = Symbol("resonance.strikes")

const UPGRADE_GONE = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"

/**
 * The one Node HTTP server of the gateway, behind the front door: its connections are counted
 * and shed there, a connection that pipelines too deep is cut, and each client address has a
 * request budget (401s, 404s and probes included). The HTTP adapter attaches its `request`
 * handler and the WebSocket adapter owns the `upgrade` event, so neither needs the other.
 */
export class NodeServer extends Context.Tag("resonance/NodeServer")<NodeServer, NodeServerShape>() {}

/** The server as `options` say, behind the process's front door. */
export const layer = (options: NodeServerOptions): Layer.Layer<NodeServer, never, FrontDoor.FrontDoor> =>
  Layer.scoped(
    NodeServer,
    Effect.gen(function*() {
      const door = yield* FrontDoor.FrontDoor
      const addressing = options.addressing ?? directAddressing
      const headersTimeout = options.headersTimeoutMs ?? 10_000
      const requestTimeout = options.requestTimeoutMs ?? 30_000
      const keepAliveTimeout = 5_000
      const maxPipelined = options.maxPipelinedRequests ?? 16
      const listener = door.listener({
        name: "http",
        maxConnections: options.maxConnections ?? 0,
        maxPerAddress: options.maxConnectionsPerIp ?? 256,
        // Headers are the door's to time: Node's own checker closes every expired connection in
        // one pass (a long stall in a flood); the door closes them in slices, shorter under pressure.
        handshakeTimeoutMs: headersTimeout,
        farewell: Buffer.from("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        idleTimeoutMs: keepAliveTimeout * 2,
        trustedIdleTimeoutMs: 0,
        requiresCredentials: false,
        exempt: addressing.isTrustedProxy
      })
      const rate = options.requestsPerIpPerSecond ?? 100
      const limiter = rate > 0
        ? makeKeyedRateLimiter({ ratePerSecond: rate, burst: Math.max(1, options.requestBurst ?? rate * 2) })
        : undefined

      const admitRequest = (request: Http.IncomingMessage, ip: string): number => {
        if (limiter === undefined) return 0
        const socket = request.socket as Socket & { [kStrikes]?: number }
        const retryAfter = limiter.take(clientKeyOf(ip), Date.now())
        if (retryAfter === 0) {
          socket[kStrikes] = 0
          return 0
        }
        const strikes = (socket[kStrikes] ?? 0) + 1
        socket[kStrikes] = strikes
        // The refusal is written first; the ban then ends the connection.
        if (strikes >= STRIKES) setImmediate(() => listener.ban(socket, BAN_MS))
        return retryAfter
      }

      const server = yield* Effect.acquireRelease(
        Effect.async<Http.Server, Error>((resume) => {
          const server = Http.createServer({
            headersTimeout: 0,
            requestTimeout,
            // Node checks those timeouts every 30 s by default, which would triple them.
            connectionsCheckingInterval: 1_000
          })
          // Keep-alive sockets outliving a response must not hold shutdown hostage.
          server.keepAliveTimeout = keepAliveTimeout
          listener.guard(server)
          server.prependListener("request", (request: Http.IncomingMessage, response: Http.ServerResponse) => {
            const socket = request.socket
            listener.requestStarted(socket)
            response.once("close", () => listener.requestEnded(socket))
            // Pipelined requests past the depth are not read: the connection goes.
            if (listener.inFlight(socket) > maxPipelined) socket.destroy()
          })
          server.prependListener("upgrade", (request: Http.IncomingMessage, socket: Duplex) => {
            listener.requestStarted(request.socket)
            // No WebSocket adapter any more (it is gone first at shutdown): answer, or the socket,
            // no longer the HTTP server's, would hold its close until the shutdown budget ran out.
            if (server.listenerCount("upgrade") === 1) socket.end(UPGRADE_GONE, () => socket.destroy())
          })
          const onError = (error: Error) => resume(Effect.fail(error))
          server.once("error", onError)
          // A connect storm overflows a short accept queue and costs clients SYN retries.
          const backlog = options.listenBacklog !== undefined && options.listenBacklog > 0 ? options.listenBacklog : somaxconn()
          server.listen({ port: options.port, host: options.host ?? "0.0.0.0", backlog }, () => {
            server.off("error", onError)
            resume(Effect.succeed(server))
          })
        }),
        (server) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeIdleConnections()
            setTimeout(() => server.closeAllConnections(), 1_000).unref()
          })
      ).pipe(Effect.orDie)

      // Under pressure idle keep-alives and slow request bodies get less time.
      const unwatch = door.onLevel((level: PressureLevel) => {
        const cap = level === "critical" ? 500 : level === "elevated" ? 2_000 : Infinity
        server.requestTimeout = Math.min(requestTimeout, Math.max(headersTimeout, cap * 5))
        server.keepAliveTimeout = Math.min(keepAliveTimeout, cap)
      })
      yield* Effect.addFinalizer(() => Effect.sync(unwatch))
      yield* Effect.logInfo("HTTP API and WebSocket listening").pipe(
        Effect.annotateLogs({ host: options.host ?? "0.0.0.0", port: (server.address() as AddressInfo).port })
      )

      return {
        server,
        port: (server.address() as AddressInfo).port,
        host: options.host ?? "0.0.0.0",
        clientIp: addressing.clientIp,
        admitRequest,
        trust: (socket) => listener.trust(socket as Socket)
      }
    })
  )

/** The server as `service.*`, `http.*` and `security.*` configure it. */
export const layerConfig = Layer.unwrapEffect(Effect.map(nodeServerOptionsConfig, layer))
