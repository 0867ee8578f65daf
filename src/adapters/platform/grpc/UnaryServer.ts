import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Http2 from "node:http2"
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2"
import type { Socket } from "node:net"
import { clientKeyOf, makeKeyedRateLimiter } from "../../../domain/RateLimit.js"
import type { Listener } from "../net/FrontDoor.js"
import { normalizeIp } from "../net/IpRules.js"
import type { InternalSecurity } from "./Security.js"
import type { ListenOptions } from "./Server.js"
import { shutDown } from "./Server.js"
import { Call } from "./UnaryServer/Call.js"
import type { CutOffReason, Peer, Shared, UnaryRoute } from "./UnaryServer/Call.js"
import { parseGrpcTimeout, refuse, refuseHttp } from "./UnaryServer/Wire.js"

export type { CutOffReason, UnaryCall, UnaryOutcome, UnaryRoute } from "./UnaryServer/Call.js"
export { grpcFrame, parseGrpcTimeout, percentEncode } from "./UnaryServer/Wire.js"

/**
 * A gRPC server for unary methods written straight on `node:http2`, for the one RPC on the
 * fan-out's hot path (PushService.Push). grpc-js builds, per call, a metadata object, an
 * intercepting call with its listeners, a message decoder, a deadline timer and a status object,
 * and in the gateway that costs more than the HTTP/2 exchange itself (bench/README.md: the
 * fan-out at 0.79–0.81 of a raw WebSocket server with grpc-js, 0.93 without). What a unary call
 * needs of gRPC over HTTP/2 is small: a POST whose body is one length-prefixed message, answered
 * by response headers, one length-prefixed message and trailers carrying `grpc-status`, or by
 * trailers alone for a refusal (github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).
 *
 * Served: admission (address lists, token, mutual TLS) before the body is read; requests
 * compressed with gzip or deflate (a compressed message in another encoding is UNIMPLEMENTED,
 * naming those accepted); a size limit on the request, judged on its length prefix and again
 * after decompression; `grpc-timeout`, and a server-side deadline for a request's body; unknown
 * methods UNIMPLEMENTED; graceful shutdown. Not served: compressed responses, server reflection,
 * health.
 *
 * Held to account, as a port a hostile or broken caller may reach: streams per connection
 * (SETTINGS_MAX_CONCURRENT_STREAMS) and Node's per-connection memory cap; request bytes buffered,
 * per connection and per server; response bytes a caller leaves unread (its connection is cut);
 * calls refused on their headers, per client key (GOAWAY ENHANCE_YOUR_CALM past a rate). Connection
 * counts and idle timeouts are for a connection-level guard: `Peer` is where its state goes.
 */

export interface UnaryServerOptions extends ListenOptions {
  /** Largest request message accepted; RESOURCE_EXHAUSTED beyond. grpc-js's default: 4 MiB. */
  readonly maxMessageBytes?: number
  /** Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). Default 100. */
  readonly maxConcurrentStreams?: number
  /** Node's memory cap per connection, in MB: new streams are refused past it. Default 32. */
  readonly maxSessionMemory?: number
  /**
   * How long a request may take to arrive whole when its `grpc-timeout` is not sooner (or absent):
   * DEADLINE_EXCEEDED past it. Default 10,000 ms.
   */
  readonly bodyTimeoutMs?: number
  /**
   * Request bytes one connection may have buffered and not yet handled; data past it refuses its
   * call RESOURCE_EXHAUSTED. Default 2 × maxMessageBytes + 64 KiB.
   */
  readonly maxSessionBufferedBytes?: number
  /** The same over every connection of this server. Default 64 MiB. */
  readonly maxBufferedBytes?: number
  /**
   * Response bytes one connection may leave unsent (its caller not reading them) for longer than
   * `outputGraceMs`: past both, the connection is cut. Default 1 MiB.
   */
  readonly maxSessionOutputBytes?: number
  /** How long a connection may stay over `maxSessionOutputBytes`, for a caller still draining a burst. Default 2,000 ms. */
  readonly outputGraceMs?: number
  /**
   * Calls refused on their headers (not POST, not gRPC, unknown method, refused admission,
   * malformed grpc-timeout), per client key (the peer's address; an IPv6 one by its /64): past
   * this rate the connection refusing one more gets GOAWAY (ENHANCE_YOUR_CALM) and is closed.
   * Default 20 per second, bursts of 50.
   */
  readonly refusals?: { readonly ratePerSecond: number; readonly burst: number }
  /** Every answered call: its path, status and seconds from its request being complete to its answer. */
  readonly onCompleted?: (path: string, status: grpc.status, seconds: number) => void
  /** A handler threw: logged by the caller, who knows its logger. */
  readonly onDefect?: (path: string, error: unknown) => void
  /** A connection was cut off: its peer's address and why. Logged by the caller. */
  readonly onCutOff?: (address: string, reason: CutOffReason) => void
  /**
   * The front door's guard of this port: it counts and sheds connections before HTTP/2 sees them,
   * closes those that make no admitted call within its handshake timeout, and turns away for a
   * while the address of a connection cut for its refusals.
   */
  readonly listener?: Listener
  /** A connection with no stream for this long is closed with GOAWAY; 0 (default): never. */
  readonly idleTimeoutMs?: number
}

/** A view of what the server holds, for tests and metrics. */
export interface UnaryServerStats {
  /** Open connections. */
  readonly connections: number
  /** Request bytes buffered, not yet handled, over every connection. */
  readonly bufferedBytes: number
  /** Calls whose request has not arrived whole. */
  readonly waitingCalls: number
  /** Response bytes answered and not yet taken by the connections' sockets. */
  readonly unsentBytes: number
}

/** A running unary server: its bound port (useful with port 0) and its counters. */
export interface UnaryServer {
  readonly port: number
  readonly stats: () => UnaryServerStats
}

const DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
const DEFAULT_MAX_CONCURRENT_STREAMS = 100
const DEFAULT_MAX_SESSION_MEMORY_MB = 32
const DEFAULT_BODY_TIMEOUT_MS = 10_000
const DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
const DEFAULT_MAX_SESSION_OUTPUT = 1024 * 1024
const DEFAULT_OUTPUT_GRACE_MS = 2_000
const DEFAULT_REFUSALS = { ratePerSecond: 20, burst: 50 }
/** How long a connection cut for its refusals has to take its GOAWAY before its socket is closed anyway. */
const CUT_OFF_GRACE_MS = 1_000
/** How long the address of a connection cut for its refusals is turned away at the door. */
const REFUSALS_BAN_MS = 10_000
/** How often calls still waiting for their request are checked against their deadline. */
const SWEEP_MS = 50

function ignore() {}

/**
 * Serves `routes` on `options.host:options.port` with `security`'s admission and (when it has
 * them) mutual TLS certificates; succeeds with the bound port. Closing the scope stops accepting,
 * lets open calls finish for up to `shutdownTimeout`, then cuts what is left.
 */
export const serveUnary = (
  routes: ReadonlyArray<UnaryRoute>,
  security: InternalSecurity,
  options: UnaryServerOptions
): Effect.Effect<number, Error, Scope.Scope> => Effect.map(makeUnaryServer(routes, security, options), (server) => server.port)

/** `serveUnary`, with the server's counters. */
export const makeUnaryServer = (
  routes: ReadonlyArray<UnaryRoute>,
  security: InternalSecurity,
  options: UnaryServerOptions
): Effect.Effect<UnaryServer, Error, Scope.Scope> => {
  const byPath = new Map(routes.map((route) => [route.path, route]))
  const waiting = new Set<Call>()
  const overOutput = new Set<Peer>()
  const onCutOff = options.onCutOff ?? ignore
  // One timer for every waiting call and every connection over its output budget, running only
  // while there is one: no timer per call.
  let sweeper: ReturnType<typeof setInterval> | undefined
  const sweep = () => {
    const now = performance.now()
    for (const call of waiting) {
      if (now >= call.deadline) call.expire()
      else call.compact()
    }
    for (const peer of overOutput) {
      if (peer.unsent <= shared.maxSessionOutput) {
        peer.overSince = -1
        overOutput.delete(peer)
      } else if (now - peer.overSince >= shared.outputGraceMs) {
        cutOff(peer, "output")
      }
    }
    if (waiting.size === 0 && overOutput.size === 0) {
      clearInterval(sweeper)
      sweeper = undefined
    }
  }
  const sweepSoon = () => {
    sweeper ??= setInterval(sweep, SWEEP_MS).unref()
  }
  const cutOff = (peer: Peer, reason: CutOffReason) => {
    if (peer.cut) return
    peer.cut = true
    overOutput.delete(peer)
    onCutOff(peer.address, reason)
    // GOAWAY ENHANCE_YOUR_CALM, then Node closes the socket once that is written... (with no
    // error, destroy's default argument would turn the code into NO_ERROR; the error goes to `ignore`)
    peer.session.destroy(new Error(`cut off: ${reason}`), Http2.constants.NGHTTP2_ENHANCE_YOUR_CALM)
    const socket = peer.socket
    if (socket === undefined || socket.destroyed) return
    // ...which, to a caller that does not read, is never: it would hold its socket and all queued on it.
    if (reason === "output") socket.destroy()
    // Its next connections are refused at accept for a while (a refusal flood costs one accept
    // each); this one is closed once its GOAWAY has had time to leave.
    else if (options.listener !== undefined) options.listener.ban(socket, REFUSALS_BAN_MS, CUT_OFF_GRACE_MS)
    else setTimeout(() => socket.destroy(), CUT_OFF_GRACE_MS).unref()
  }
  const refusals = makeKeyedRateLimiter({ ...(options.refusals ?? DEFAULT_REFUSALS), maxKeys: 10_000 })
  /**
   * Counts a refusal on the headers against the peer's client key (its address; an IPv6 address by
   * its /64, as the front door counts it); true when that was one too many and the connection is cut.
   */
  const tooManyRefusals = (peer: Peer, now: number): boolean => {
    if (refusals.take(clientKeyOf(normalizeIp(peer.address) ?? peer.address), now) === 0) return false
    cutOff(peer, "refusals")
    return true
  }
  const maxMessage = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE
  const shared: Shared = {
    maxMessage,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
    // A message being handled and the next one arriving, with room for the frames around them.
    maxSessionBuffered: options.maxSessionBufferedBytes ?? 2 * maxMessage + 64 * 1024,
    maxBuffered: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED,
    buffered: 0,
    maxSessionOutput: options.maxSessionOutputBytes ?? DEFAULT_MAX_SESSION_OUTPUT,
    outputGraceMs: options.outputGraceMs ?? DEFAULT_OUTPUT_GRACE_MS,
    overOutput: (peer, now) => {
      peer.overSince = now
      overOutput.add(peer)
      sweepSoon()
    },
    cutOff,
    waiting,
    sweep: sweepSoon,
    onCompleted: options.onCompleted ?? ignore,
    onDefect: options.onDefect ?? ignore
  }
  const onCompleted = shared.onCompleted
  const listener = options.listener
  const idleTimeoutMs = options.idleTimeoutMs ?? 0
  const peers = new Set<Peer>()
  // The socket of the connection whose session is being made: 'session' follows it synchronously.
  let accepted: Socket | undefined

  const onStream = (peer: Peer, stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const arrived = performance.now()
    // An unhandled 'error' on a stream would throw; a reset stream is nothing to report.
    stream.on("error", ignore)
    // A refusal on the headers reads no body: the stream is closed after its answer.
    if (headers[":method"] !== "POST") {
      if (!tooManyRefusals(peer, arrived)) refuseHttp(stream, { ":status": 405, allow: "POST" })
      return
    }
    const contentType = headers["content-type"]
    if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) {
      if (!tooManyRefusals(peer, arrived)) refuseHttp(stream, { ":status": 415 })
      return
    }
    const path = headers[":path"] ?? ""
    const route = byPath.get(path)
    if (route === undefined) {
      if (tooManyRefusals(peer, arrived)) return
      // Not counted: a label per path a caller makes up would grow the metrics without bound.
      // `:path` arrives as latin1 text of its bytes; a Go or C-core caller sends UTF-8.
      return refuse(stream, grpc.status.UNIMPLEMENTED, `unknown method ${Buffer.from(path, "latin1").toString("utf8")}`)
    }
    const refusal = security.admitPeer(peer.address, headers.authorization)
    if (refusal !== undefined) {
      if (tooManyRefusals(peer, arrived)) return
      refuse(stream, refusal.status, refusal.message)
      return onCompleted(path, refusal.status, (performance.now() - arrived) / 1000)
    }
    if (!peer.trusted) {
      peer.trusted = true
      if (peer.socket !== undefined) listener?.trust(peer.socket)
    }
    let deadline = arrived + shared.bodyTimeoutMs
    let callersDeadline = false
    const timeout = headers["grpc-timeout"]
    if (timeout !== undefined) {
      const millis = typeof timeout === "string" ? parseGrpcTimeout(timeout) : -1
      if (millis < 0) {
        if (tooManyRefusals(peer, arrived)) return
        refuse(stream, grpc.status.INTERNAL, `malformed grpc-timeout ${String(timeout)}`)
        return onCompleted(path, grpc.status.INTERNAL, (performance.now() - arrived) / 1000)
      }
      if (arrived + millis < deadline) {
        deadline = arrived + millis
        callersDeadline = true
      }
    }
    const encoding = headers["grpc-encoding"] ?? "identity"
    new Call(shared, peer, stream, route, headers, typeof encoding === "string" ? encoding : String(encoding), arrived, deadline, callersDeadline)
  }

  const onSession = (session: ServerHttp2Session) => {
    const socket = accepted
    accepted = undefined
    const peer: Peer = {
      session,
      socket,
      address: socket?.remoteAddress ?? "",
      buffered: 0,
      unsent: 0,
      overSince: -1,
      cut: false,
      trusted: false
    }
    peers.add(peer)
    session.on("error", ignore)
    // Node's own session timer: no activity for this long, and the connection is closed (GOAWAY).
    if (idleTimeoutMs > 0) session.setTimeout(idleTimeoutMs, () => session.close())
    session.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => onStream(peer, stream, headers))
    session.once("close", () => {
      peers.delete(peer)
      overOutput.delete(peer)
    })
  }

  const make = (): Http2.Http2Server | Http2.Http2SecureServer => {
    const common = {
      settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS },
      // grpc-js turns this cap off ("Node's behavior degrades badly when this limit is reached":
      // every new stream refused, then the session ended). Safe here: what Node counts (queued
      // frames and response bytes, header tables, streams) is bounded by maxConcurrentStreams and
      // the output cut-off, request bodies are ours and not counted, and Push answers are small;
      // a peer that reaches 32 MB is flooding or not reading, and losing it is the point.
      maxSessionMemory: options.maxSessionMemory ?? DEFAULT_MAX_SESSION_MEMORY_MB
    }
    const tls = security.serverTls
    if (tls === undefined) {
      const server = Http2.createServer(common)
      server.prependListener("connection", (socket: Socket) => (accepted = socket))
      return server
    }
    const server = Http2.createSecureServer({
      ...common,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      // Mutual TLS: a peer without a certificate signed by the CA never completes the handshake.
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ["h2"]
    })
    server.prependListener("secureConnection", (socket: Socket) => (accepted = socket))
    server.on("secureConnection", (socket) => socket.on("error", ignore))
    // A TLS peer that did not negotiate h2 is not a gRPC client.
    server.on("unknownProtocol", (socket) => socket.destroy())
    return server
  }

  // Released after the server: the calls still waiting at shutdown are swept until then.
  const stopSweeping = Effect.addFinalizer(() => Effect.sync(() => clearInterval(sweeper)))
  return Effect.zipRight(stopSweeping, Effect.acquireRelease(
    Effect.async<{ server: Http2.Http2Server | Http2.Http2SecureServer; port: number }, Error>((resume) => {
      const server = make()
      // Prepended after the server's own listeners: the door sees each connection first.
      listener?.guard(server)
      server.on("session", onSession)
      const failed = (error: Error) => resume(Effect.fail(error))
      server.once("error", failed)
      server.listen(options.port, options.host, () => {
        server.off("error", failed)
        server.on("error", ignore)
        const address = server.address()
        resume(Effect.succeed({ server, port: typeof address === "object" && address !== null ? address.port : options.port }))
      })
    }),
    ({ server }) =>
      shutDown(
        options.shutdownTimeout,
        (done) => {
          server.close(() => done())
          // GOAWAY: no new calls on open connections; the calls in flight finish, then each closes.
          for (const peer of peers) peer.session.close()
        },
        () => {
          // The socket too: a session whose peer stopped reading would wait on its writes forever.
          for (const peer of peers) {
            peer.session.destroy()
            peer.socket?.destroy()
          }
        }
      )
  )).pipe(Effect.map(({ port }): UnaryServer => ({ port, stats: () => {
    let unsentBytes = 0
    for (const peer of peers) unsentBytes += peer.unsent
    return { connections: peers.size, bufferedBytes: shared.buffered, waitingCalls: waiting.size, unsentBytes }
  } })))
}
