import type * as grpc from "@grpc/grpc-js"
import * as Http2 from "node:http2"
import type { ServerHttp2Stream } from "node:http2"
import * as Zlib from "node:zlib"

/** gRPC over HTTP/2 as the unary server writes and reads it (PROTOCOL-HTTP2.md). */

export const PREFIX = 5

export const RESPONSE_HEADERS: Http2.OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc+proto" }
const OK_TRAILERS: Http2.OutgoingHttpHeaders = { "grpc-status": "0" }

export const ACCEPT_ENCODING = "identity,gzip,deflate"

/** The message of a compressed frame, at most `limit` bytes once inflated. Throws past the limit. */
export const inflate = (encoding: string, payload: Uint8Array, limit: number): Buffer =>
  encoding === "gzip"
    ? Zlib.gunzipSync(payload, { maxOutputLength: limit })
    : Zlib.inflateSync(payload, { maxOutputLength: limit })

export function sendOkTrailers(this: ServerHttp2Stream) {
  this.sendTrailers(OK_TRAILERS)
}

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
export const refuse = (
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
export const refuseHttp = (stream: ServerHttp2Stream, headers: Http2.OutgoingHttpHeaders) => {
  if (stream.closed || stream.destroyed || stream.headersSent) return
  stream.respond(headers, { endStream: true })
  if (!stream.closed) stream.close(Http2.constants.NGHTTP2_NO_ERROR)
}
