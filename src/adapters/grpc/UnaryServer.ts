import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Http2 from "node:http2"
import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2"
import * as Zlib from "node:zlib"
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
 * compressed with gzip or deflate (any other encoding is UNIMPLEMENTED, naming those accepted);
 * a size limit on the request, also after decompression; unknown methods UNIMPLEMENTED; graceful
 * shutdown. Not served: `grpc-timeout` (a handler here answers synchronously the moment the body
 * has arrived, so a deadline can only expire on the caller's side, which then cancels the
 * stream), compressed responses, server reflection, health.
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
  /** Every answered call: its path, status and seconds from its request being complete to its answer. */
  readonly onCompleted?: (path: string, status: grpc.status, seconds: number) => void
  /** A handler threw: logged by the caller, who knows its logger. */
  readonly onDefect?: (path: string, error: unknown) => void
}

const PREFIX = 5
const DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024

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

/** A "Trailers-Only" answer: the status in the only HEADERS frame, which ends the stream. */
const refuse = (stream: ServerHttp2Stream, code: grpc.status, details: string, extra?: Http2.OutgoingHttpHeaders) => {
  if (stream.destroyed || stream.headersSent) return
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
  if (!stream.closed) stream.close(Http2.constants.NGHTTP2_NO_ERROR)
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
): Effect.Effect<number, Error, Scope.Scope> => {
  const byPath = new Map(routes.map((route) => [route.path, route]))
  const maxMessage = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE
  const onCompleted = options.onCompleted ?? ignore
  const onDefect = options.onDefect ?? ignore
  const sessions = new Set<ServerHttp2Session>()
  // The peer's address, read once per connection: `session.socket` is a proxy, costly per call.
  const peers = new WeakMap<Http2.Http2Session, string>()

  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    // A call's duration runs from its request being complete (its headers, for a call refused on
    // them) to its answer, as grpc-js and go-grpc-prometheus time a unary handler.
    let started = performance.now()
    // An unhandled 'error' on a stream would throw; a reset stream is nothing to report.
    stream.on("error", ignore)
    const path = headers[":path"] ?? ""
    const answered = (code: grpc.status) => onCompleted(path, code, (performance.now() - started) / 1000)

    if (headers[":method"] !== "POST") {
      stream.respond({ ":status": 405, allow: "POST" }, { endStream: true })
      return
    }
    const contentType = headers["content-type"]
    if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) {
      stream.respond({ ":status": 415 }, { endStream: true })
      return
    }
    const route = byPath.get(path)
    if (route === undefined) {
      // Not counted: a label per path a caller makes up would grow the metrics without bound.
      // `:path` arrives as latin1 text of its bytes; a Go or C-core caller sends UTF-8.
      refuse(stream, grpc.status.UNIMPLEMENTED, `unknown method ${Buffer.from(path, "latin1").toString("utf8")}`)
      return
    }
    const authorization = headers.authorization
    const refusal = security.admitPeer(peers.get(stream.session as Http2.Http2Session) ?? "", authorization)
    if (refusal !== undefined) {
      refuse(stream, refusal.status, refusal.message)
      return answered(refusal.status)
    }
    const encoding = headers["grpc-encoding"] ?? "identity"
    if (encoding !== "identity" && encoding !== "gzip" && encoding !== "deflate") {
      refuse(stream, grpc.status.UNIMPLEMENTED, `grpc-encoding ${String(encoding)} is not supported`, {
        "grpc-accept-encoding": ACCEPT_ENCODING
      })
      return answered(grpc.status.UNIMPLEMENTED)
    }

    let first: Buffer | undefined
    let more: Array<Buffer> | undefined
    let received = 0
    stream.on("data", (chunk: Buffer) => {
      received += chunk.byteLength
      if (received > maxMessage + PREFIX) {
        if (!stream.headersSent) {
          refuse(stream, grpc.status.RESOURCE_EXHAUSTED, `request larger than ${maxMessage} bytes`)
          answered(grpc.status.RESOURCE_EXHAUSTED)
        }
        first = undefined
        more = undefined
        return
      }
      if (first === undefined) first = chunk
      else (more ??= [first]).push(chunk)
    })
    stream.on("end", () => {
      if (stream.headersSent || stream.destroyed) return
      started = performance.now()
      const body = more !== undefined ? Buffer.concat(more) : first
      // Exactly one uncompressed message: a unary request.
      if (body === undefined || body.byteLength < PREFIX || body.readUInt32BE(1) !== body.byteLength - PREFIX) {
        refuse(stream, grpc.status.INTERNAL, "a unary request carries exactly one length-prefixed message")
        return answered(grpc.status.INTERNAL)
      }
      let message: Uint8Array = body.subarray(PREFIX)
      if (body[0] !== 0) {
        if (body[0] !== 1 || encoding === "identity") {
          refuse(stream, grpc.status.INTERNAL, "compressed message without grpc-encoding")
          return answered(grpc.status.INTERNAL)
        }
        try {
          message = inflate(encoding, message, maxMessage)
        } catch (error) {
          const tooLarge = error instanceof RangeError || (error as { code?: unknown }).code === "ERR_BUFFER_TOO_LARGE"
          const code = tooLarge ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INTERNAL
          refuse(stream, code, tooLarge ? `request larger than ${maxMessage} bytes` : `cannot decompress the ${encoding} message`)
          return answered(code)
        }
      }
      let outcome: UnaryOutcome
      try {
        outcome = route.handle(message, { headers })
      } catch (error) {
        onDefect(path, error)
        outcome = { code: grpc.status.INTERNAL, details: "internal error" }
      }
      if ("code" in outcome) {
        refuse(stream, outcome.code, outcome.details)
        return answered(outcome.code)
      }
      stream.respond(RESPONSE_HEADERS, { waitForTrailers: true })
      stream.once("wantTrailers", sendOkTrailers)
      stream.end(grpcFrame(outcome.response))
      answered(grpc.status.OK)
    })
  }

  const onSession = (session: ServerHttp2Session) => {
    sessions.add(session)
    peers.set(session, session.socket?.remoteAddress ?? "")
    session.on("error", ignore)
    session.once("close", () => sessions.delete(session))
  }

  const make = (): Http2.Http2Server | Http2.Http2SecureServer => {
    const common = {
      // As grpc-js: Node's per-session memory cap degrades badly when reached, so it is not enforced.
      maxSessionMemory: Number.MAX_SAFE_INTEGER
    }
    const tls = security.serverTls
    if (tls === undefined) return Http2.createServer(common)
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
    server.on("secureConnection", (socket) => socket.on("error", ignore))
    // A TLS peer that did not negotiate h2 is not a gRPC client.
    server.on("unknownProtocol", (socket) => socket.destroy())
    return server
  }

  return Effect.acquireRelease(
    Effect.async<{ server: Http2.Http2Server | Http2.Http2SecureServer; port: number }, Error>((resume) => {
      const server = make()
      server.on("stream", onStream)
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
          for (const session of sessions) session.close()
        },
        () => {
          for (const session of sessions) session.destroy()
        }
      )
  ).pipe(Effect.map(({ port }) => port))
}
