import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Http2 from "node:http2"
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2"
import type { Socket } from "node:net"
import * as Zlib from "node:zlib"
import { makeKeyedRateLimiter } from "../../domain/RateLimit.js"
import type { InternalSecurity } from "./Security.js"
import type { ListenOptions } from "./Server.js"
import { shutDown } from "./Server.js"

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
 * calls refused on their headers, per address (GOAWAY ENHANCE_YOUR_CALM past a rate). Connection
 * counts and idle timeouts are for a connection-level guard: `Peer` is where its state goes.
 */

/** What a handler sees of a call besides its message. */
export interface UnaryCall {
  /** The request headers (the call's metadata), names lower-case. */
  readonly headers: IncomingHttpHeaders
}

/** A handler's answer: the encoded response, or a status other than OK. */
export type UnaryOutcome =
  | { readonly response: Uint8Array }
  | { readonly code: grpc.status; readonly details: string }

/** One method served: its path and its handler (not `./Client.ts`'s `UnaryMethod`, a generated descriptor). */
export interface UnaryRoute {
  /** `/package.Service/Method`. */
  readonly path: string
  /** Plain and synchronous: runs inside the HTTP/2 stream's `end` event. A throw answers INTERNAL. */
  readonly handle: (message: Uint8Array, call: UnaryCall) => UnaryOutcome
}

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
   * malformed grpc-timeout), per peer address: past this rate the connection refusing one more
   * gets GOAWAY (ENHANCE_YOUR_CALM) and is closed. Default 20 per second, bursts of 50.
   */
  readonly refusals?: { readonly ratePerSecond: number; readonly burst: number }
  /** Every answered call: its path, status and seconds from its request being complete to its answer. */
  readonly onCompleted?: (path: string, status: grpc.status, seconds: number) => void
  /** A handler threw: logged by the caller, who knows its logger. */
  readonly onDefect?: (path: string, error: unknown) => void
  /** A connection was cut off: its peer's address and why. Logged by the caller. */
  readonly onCutOff?: (address: string, reason: CutOffReason) => void
}

/** Why a connection was cut: its caller left too many response bytes unread, or was refused too often. */
export type CutOffReason = "output" | "refusals"

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

const PREFIX = 5
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
/** How often calls still waiting for their request are checked against their deadline. */
const SWEEP_MS = 50

const RESPONSE_HEADERS: Http2.OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc+proto" }
const OK_TRAILERS: Http2.OutgoingHttpHeaders = { "grpc-status": "0" }

const ACCEPT_ENCODING = "identity,gzip,deflate"

/** The message of a compressed frame, at most `limit` bytes once inflated. Throws past the limit. */
const inflate = (encoding: string, payload: Uint8Array, limit: number): Buffer =>
  encoding === "gzip"
    ? Zlib.gunzipSync(payload, { maxOutputLength: limit })
    : Zlib.inflateSync(payload, { maxOutputLength: limit })

function sendOkTrailers(this: ServerHttp2Stream) {
  this.sendTrailers(OK_TRAILERS)
}

function ignore() {}

/** The length-prefixed form of one message (compression flag 0). */
export const grpcFrame = (message: Uint8Array): Buffer => {
  const frame = Buffer.allocUnsafe(PREFIX + message.byteLength)
  frame[0] = 0
  frame.writeUInt32BE(message.byteLength, 1)
  frame.set(message, PREFIX)
  return frame
}

const HEX = "0123456789ABCDEF"

/**
 * `grpc-message`'s encoding (PROTOCOL-HTTP2.md, Status-Message): the text's UTF-8 bytes, each
 * outside 0x20–0x7E or a '%' as %XX. grpc-js (decodeURI), grpc-go and C-core decode it back to
 * the text; a lone surrogate becomes U+FFFD rather than a throw.
 */
export const percentEncode = (text: string): string => {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit < 0x20 || unit > 0x7e || unit === 0x25) return text.slice(0, i) + percentEncodeBytes(Buffer.from(text.slice(i), "utf8"))
  }
  return text
}

const percentEncodeBytes = (bytes: Buffer): string => {
  let encoded = ""
  for (const byte of bytes) {
    encoded += byte < 0x20 || byte > 0x7e || byte === 0x25
      ? `%${HEX[byte >> 4]}${HEX[byte & 15]}`
      : String.fromCharCode(byte)
  }
  return encoded
}

/**
 * A `grpc-timeout` value in milliseconds (1 to 8 digits, then H, M, S, m, u or n), or -1 when it
 * is none: PROTOCOL-HTTP2.md gives the grammar; grpc-go and grpc-js refuse the call otherwise.
 */
export const parseGrpcTimeout = (value: string): number => {
  const unit = value.length - 1
  if (unit < 1 || unit > 8) return -1
  let amount = 0
  for (let i = 0; i < unit; i++) {
    const digit = value.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return -1
    amount = amount * 10 + digit
  }
  switch (value.charCodeAt(unit)) {
    case 72: // H
      return amount * 3_600_000
    case 77: // M
      return amount * 60_000
    case 83: // S
      return amount * 1_000
    case 109: // m
      return amount
    case 117: // u
      return amount / 1_000
    case 110: // n
      return amount / 1_000_000
    default:
      return -1
  }
}

/** A "Trailers-Only" answer: the status in the only HEADERS frame, which ends the stream. */
const refuse = (
  stream: ServerHttp2Stream,
  code: grpc.status,
  details: string,
  extra?: Http2.OutgoingHttpHeaders,
  reset: number = Http2.constants.NGHTTP2_NO_ERROR
) => {
  if (stream.closed || stream.destroyed || stream.headersSent) return
  stream.respond(
    {
      ...RESPONSE_HEADERS,
      "grpc-status": String(code),
      "grpc-message": percentEncode(details),
      ...extra
    },
    { endStream: true }
  )
  // Whatever the caller still sends is not read: tell it to stop (RFC 9113 §8.1).
  if (!stream.closed) stream.close(reset)
}

/** An HTTP answer for what is no gRPC request; the body, if any, is not read. */
const refuseHttp = (stream: ServerHttp2Stream, headers: Http2.OutgoingHttpHeaders) => {
  if (stream.closed || stream.destroyed || stream.headersSent) return
  stream.respond(headers, { endStream: true })
  if (!stream.closed) stream.close(Http2.constants.NGHTTP2_NO_ERROR)
}

/** One connection: what the server keeps of it, read once (`session.socket` is a proxy, costly per call). */
interface Peer {
  readonly session: ServerHttp2Session
  /** The connection's own socket (the session's is a proxy that refuses `destroy`). */
  readonly socket: Socket | undefined
  readonly address: string
  /** Request bytes its calls hold, not yet handled. */
  buffered: number
  /**
   * Response bytes answered whose stream is still open: Node closes a stream once its last frame
   * is written, so this is what waits for the caller's flow-control window or for the socket (Node
   * writes through the native handle: the socket's own `writableLength` stays 0).
   */
  unsent: number
  /** Since when `unsent` has been over the budget; -1 while it is not. */
  overSince: number
  /** Cut off: nothing more is served on it. */
  cut: boolean
}

/**
 * A chunk to hold past its 'data' event. Node's chunks are views into the socket read they came
 * in, and a small one held would keep that whole read alive: such a one is copied.
 */
const keep = (chunk: Buffer): Buffer => (chunk.buffer.byteLength > 4 * chunk.byteLength ? Buffer.from(chunk) : chunk)

/** What every call of one server shares: its limits and handlers. */
interface Shared {
  readonly maxMessage: number
  readonly bodyTimeoutMs: number
  readonly maxSessionBuffered: number
  readonly maxBuffered: number
  /** Request bytes held over every connection. */
  buffered: number
  readonly maxSessionOutput: number
  readonly outputGraceMs: number
  /** `peer` has just gone over its output budget. */
  readonly overOutput: (peer: Peer, now: number) => void
  readonly cutOff: (peer: Peer, reason: CutOffReason) => void
  /** Calls whose request is not complete yet: swept for their deadline. Usually empty, the body coming with the headers. */
  readonly waiting: Set<Call>
  /** Makes sure `waiting` is being swept. */
  readonly sweep: () => void
  readonly onCompleted: (path: string, status: grpc.status, seconds: number) => void
  readonly onDefect: (path: string, error: unknown) => void
}

/**
 * One admitted call, from its headers to its answer. The request is buffered as it arrives; its
 * length prefix is judged as soon as its 5 bytes are in, the rest once the stream ends.
 */
class Call {
  /** The body so far: one chunk (the usual case, the whole message in one DATA frame), or all of them. */
  private first: Buffer | undefined
  private more: Array<Buffer> | undefined
  private received = 0
  /** Of `received`, what is counted in the connection's and the server's buffered bytes. */
  private held = 0
  /** `first` is no view into a larger read any more (see `keep`). */
  private compacted = false
  /** The message length its prefix declares; -1 until the prefix is in. */
  private declared = -1
  /** Neither answered nor closed: its bytes still arriving. */
  private open = true
  /** Its response's bytes, counted in the connection's `unsent` until the stream closes. */
  private unsent = 0
  /** From the headers, then from the body's end: a call's duration is from its request being complete to its answer. */
  private started: number

  constructor(
    private readonly shared: Shared,
    private readonly peer: Peer,
    private readonly stream: ServerHttp2Stream,
    private readonly route: UnaryRoute,
    private readonly headers: IncomingHttpHeaders,
    private readonly encoding: string,
    arrived: number,
    /** When the call is over if its request has not arrived: the caller's deadline or the server's. */
    readonly deadline: number,
    private readonly callersDeadline: boolean
  ) {
    this.started = arrived
    shared.waiting.add(this)
    shared.sweep()
    // Anonymous on purpose: tsx (esbuild, keepNames) wraps a named arrow in a defineProperty of
    // its name each time one is made, which per call cost more than the closure itself.
    stream.on("data", (chunk: Buffer) => this.onData(chunk))
    stream.on("end", () => this.onEnd())
    stream.on("close", () => this.onClose())
  }

  private onData(chunk: Buffer) {
    if (!this.open) return
    const size = chunk.byteLength
    const peer = this.peer
    const shared = this.shared
    if (peer.buffered + size > shared.maxSessionBuffered) {
      return this.fail(grpc.status.RESOURCE_EXHAUSTED, "too many request bytes pending on this connection")
    }
    if (shared.buffered + size > shared.maxBuffered) {
      return this.fail(grpc.status.RESOURCE_EXHAUSTED, "too many request bytes pending on this server")
    }
    peer.buffered += size
    shared.buffered += size
    this.held += size
    if (this.first === undefined) {
      this.first = chunk
    } else {
      if (this.more === undefined) this.more = [(this.first = keep(this.first))]
      this.more.push(keep(chunk))
    }
    this.received += size
    if (this.declared < 0) {
      if (this.received < PREFIX) return
      this.readPrefix()
      if (!this.open) return
    }
    if (this.received > PREFIX + this.declared) {
      this.fail(grpc.status.INTERNAL, "a unary request carries exactly one length-prefixed message")
    }
  }

  /** Refuses on the prefix alone what the message cannot change: its size, its compression. */
  private readPrefix() {
    const head = this.first!.byteLength >= PREFIX ? this.first! : Buffer.concat(this.more!)
    const flag = head[0]
    this.declared = head.readUInt32BE(1)
    const maxMessage = this.shared.maxMessage
    if (this.declared > maxMessage) return this.fail(grpc.status.RESOURCE_EXHAUSTED, `request larger than ${maxMessage} bytes`)
    if (flag === 0) return
    if (flag !== 1) return this.fail(grpc.status.INTERNAL, `unknown compressed flag ${flag}`)
    if (this.encoding === "identity") return this.fail(grpc.status.INTERNAL, "compressed message without grpc-encoding")
    // Only now: an encoding no message uses is no reason to refuse (PROTOCOL-HTTP2.md, Compressed-Flag).
    if (this.encoding !== "gzip" && this.encoding !== "deflate") {
      this.fail(grpc.status.UNIMPLEMENTED, `grpc-encoding ${this.encoding} is not supported`, {
        "grpc-accept-encoding": ACCEPT_ENCODING
      })
    }
  }

  private onEnd() {
    if (!this.open) return
    const stream = this.stream
    // Its connection gone or the caller's reset: Node ends the stream (closed, not yet destroyed).
    if (stream.closed || stream.destroyed) return this.settle()
    const body = this.more !== undefined ? Buffer.concat(this.more) : this.first
    this.settle()
    this.started = performance.now()
    if (this.started > this.deadline) return this.answer(grpc.status.DEADLINE_EXCEEDED, this.lateness())
    // Exactly one message, whole.
    if (body === undefined || body.byteLength < PREFIX || this.received !== PREFIX + this.declared) {
      return this.answer(grpc.status.INTERNAL, "a unary request carries exactly one length-prefixed message")
    }
    let message: Uint8Array = body.subarray(PREFIX)
    if (body[0] === 1) {
      const maxMessage = this.shared.maxMessage
      try {
        message = inflate(this.encoding, message, maxMessage)
      } catch (error) {
        const tooLarge = error instanceof RangeError || (error as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE"
        return tooLarge
          ? this.answer(grpc.status.RESOURCE_EXHAUSTED, `request larger than ${maxMessage} bytes`)
          : this.answer(grpc.status.INTERNAL, `cannot decompress the ${this.encoding} message`)
      }
    }
    const peer = this.peer
    const shared = this.shared
    // A caller that has left its answers unread long enough gets no more: nothing is done for it.
    if (peer.overSince >= 0 && this.started - peer.overSince >= shared.outputGraceMs) return shared.cutOff(peer, "output")
    const path = this.route.path
    let outcome: UnaryOutcome
    try {
      outcome = this.route.handle(message, { headers: this.headers })
    } catch (error) {
      this.shared.onDefect(path, error)
      outcome = { code: grpc.status.INTERNAL, details: "internal error" }
    }
    if ("code" in outcome) return this.answer(outcome.code, outcome.details)
    const frame = grpcFrame(outcome.response)
    stream.respond(RESPONSE_HEADERS, { waitForTrailers: true })
    stream.once("wantTrailers", sendOkTrailers)
    stream.end(frame)
    this.unsent = frame.byteLength
    peer.unsent += frame.byteLength
    const now = performance.now()
    if (peer.unsent > shared.maxSessionOutput && peer.overSince < 0) shared.overOutput(peer, now)
    shared.onCompleted(path, grpc.status.OK, (now - this.started) / 1000)
  }

  /** The stream is gone: reset by the caller, cut with its connection, or answered. */
  private onClose() {
    if (this.open) this.settle()
    this.peer.unsent -= this.unsent
    this.unsent = 0
  }

  /** The deadline has passed with the request still incomplete: the caller gets the status, the stream is cancelled (PROTOCOL-HTTP2.md). */
  expire() {
    this.settle()
    refuse(this.stream, grpc.status.DEADLINE_EXCEEDED, this.lateness(), undefined, Http2.constants.NGHTTP2_CANCEL)
    this.shared.onCompleted(this.route.path, grpc.status.DEADLINE_EXCEEDED, (performance.now() - this.started) / 1000)
  }

  /** A call still waiting after a sweep: its lone chunk stops holding a whole read (see `keep`). */
  compact() {
    if (this.compacted || this.more !== undefined || this.first === undefined) return
    this.compacted = true
    this.first = keep(this.first)
  }

  private lateness() {
    return this.callersDeadline ? "deadline exceeded (grpc-timeout)" : `request not complete within ${this.shared.bodyTimeoutMs} ms`
  }

  /** No more of the request is wanted. */
  private settle() {
    this.open = false
    this.shared.waiting.delete(this)
    this.peer.buffered -= this.held
    this.shared.buffered -= this.held
    this.held = 0
    this.first = undefined
    this.more = undefined
  }

  /** Refuses the call before its request is complete. */
  private fail(code: grpc.status, details: string, extra?: Http2.OutgoingHttpHeaders) {
    this.settle()
    this.answer(code, details, extra)
  }

  private answer(code: grpc.status, details: string, extra?: Http2.OutgoingHttpHeaders) {
    refuse(this.stream, code, details, extra)
    this.shared.onCompleted(this.route.path, code, (performance.now() - this.started) / 1000)
  }
}

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
    else setTimeout(() => socket.destroy(), CUT_OFF_GRACE_MS).unref()
  }
  const refusals = makeKeyedRateLimiter({ ...(options.refusals ?? DEFAULT_REFUSALS), maxKeys: 10_000 })
  /** Counts a refusal on the headers against the peer's address; true when that was one too many and the connection is cut. */
  const tooManyRefusals = (peer: Peer, now: number): boolean => {
    if (refusals.take(peer.address, now) === 0) return false
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
    const peer: Peer = { session, socket, address: socket?.remoteAddress ?? "", buffered: 0, unsent: 0, overSince: -1, cut: false }
    peers.add(peer)
    session.on("error", ignore)
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
