import * as grpc from "@grpc/grpc-js"
import * as Http2 from "node:http2"
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2"
import type { Socket } from "node:net"
import { ACCEPT_ENCODING, grpcFrame, inflate, PREFIX, refuse, RESPONSE_HEADERS, sendOkTrailers } from "./Wire.js"

/** A call's life on the unary server (../UnaryServer.ts), and the connection record it is charged to. */

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

/** Why a connection was cut: its caller left too many response bytes unread, or was refused too often. */
export type CutOffReason = "output" | "refusals"

/** One connection: what the server keeps of it, read once (`session.socket` is a proxy, costly per call). */
export interface Peer {
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
  /** Made an admitted call: the front door no longer counts it a stranger. */
  trusted: boolean
}

/**
 * A chunk to hold past its 'data' event. Node's chunks are views into the socket read they came
 * in, and a small one held would keep that whole read alive: such a one is copied.
 */
const keep = (chunk: Buffer): Buffer => (chunk.buffer.byteLength > 4 * chunk.byteLength ? Buffer.from(chunk) : chunk)

/** What every call of one server shares: its limits and handlers. */
export interface Shared {
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
export class Call {
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
