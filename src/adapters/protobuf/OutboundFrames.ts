import type { AckBody, PushMessage } from "../../domain/Model.js"

/**
 * The two frames every chat sends (the sender's ack, each device's push) and the pulse reply,
 * written straight into one `Buffer.allocUnsafe` slice: the bytes `WsPacket.encode` gives, field
 * for field and in its order, without its writer. The generated writer makes a `TextEncoder`
 * output per string (an off-heap ArrayBuffer each), a chunk per nested message and BigInt
 * arithmetic per int64; a young generation full of small ArrayBuffers is what makes a scavenge
 * sweep them and glibc consolidate their frees on the event loop.
 */

const MAX_SAFE = 9_007_199_254_740_991n

const varint32Size = (n: number): number =>
  n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x20_0000 ? 3 : n < 0x1000_0000 ? 4 : 5

/** Bytes of a non-negative integer below 2^53 as a varint. */
const varintNumberSize = (n: number): number => {
  if (n < 0x1000_0000) return varint32Size(n)
  let size = 4
  for (let rest = Math.floor(n / 0x1000_0000); rest > 0; rest = Math.floor(rest / 0x80)) size++
  return size
}

const INT64_MAX = 9_223_372_036_854_775_807n
const INT64_MIN = -9_223_372_036_854_775_808n

/** Bytes of an int64 as protobuf writes it (two's complement, 10 bytes when negative). */
const int64Size = (value: bigint): number => {
  if (value >= 0n && value <= MAX_SAFE) return varintNumberSize(Number(value))
  // As the generated writer does: a value that is no int64 is refused, not wrapped.
  if (value > INT64_MAX || value < INT64_MIN) throw new Error(`int64 out of range: ${value}`)
  if (value < 0n) return 10
  const high = Number(value >> 32n)
  return high < 0x8 ? 5 : 5 + varint32Size(high >>> 3)
}

/** UTF-8 bytes of a string (lone surrogates count as U+FFFD, as `TextEncoder` writes them). */
const utf8Size = (text: string): number => (text.length === 0 ? 0 : Buffer.byteLength(text, "utf8"))

const fieldSize = (bytes: number): number => 1 + varint32Size(bytes) + bytes

class Cursor {
  pos = 0
  constructor(readonly buf: Buffer) {}

  byte(value: number): void {
    this.buf[this.pos++] = value
  }

  varint32(value: number): void {
    const buf = this.buf
    while (value > 0x7f) {
      buf[this.pos++] = (value & 0x7f) | 0x80
      value >>>= 7
    }
    buf[this.pos++] = value
  }

  varint64(low: number, high: number): void {
    const buf = this.buf
    while (high !== 0) {
      buf[this.pos++] = (low & 0x7f) | 0x80
      low = ((low >>> 7) | (high << 25)) >>> 0
      high >>>= 7
    }
    this.varint32(low)
  }

  int64(value: bigint): void {
    if (value >= 0n && value <= MAX_SAFE) {
      const n = Number(value)
      if (n <= 0xffff_ffff) return this.varint32(n)
      return this.varint64(n % 0x1_0000_0000, Math.floor(n / 0x1_0000_0000))
    }
    const unsigned = BigInt.asUintN(64, value)
    this.varint64(Number(unsigned & 0xffff_ffffn), Number(unsigned >> 32n))
  }

  int32(value: number): void {
    if (value >= 0) return this.varint32(value)
    this.varint64(value >>> 0, 0xffff_ffff)
  }

  /** `bytes` is `utf8Size(text)`. */
  string(text: string, bytes: number): void {
    this.varint32(bytes)
    if (bytes === text.length && bytes < 24) {
      // ASCII: a short loop is cheaper than a call into C++.
      const buf = this.buf
      for (let i = 0; i < bytes; i++) buf[this.pos++] = text.charCodeAt(i)
      return
    }
    this.pos += this.buf.write(text, this.pos, bytes, "utf8")
  }
}

const int32Size = (value: number): number => {
  if (!Number.isInteger(value) || value > 0x7fff_ffff || value < -0x8000_0000) throw new Error(`int32 out of range: ${value}`)
  return value >= 0 ? varint32Size(value) : 10
}

/** WsPacket { seq, push: message }. */
export const encodePushFrame = (seq: string, message: PushMessage): Buffer => {
  const seqBytes = utf8Size(seq)
  const session = utf8Size(message.sessionId)
  const from = utf8Size(message.fromUsername)
  const to = utf8Size(message.toUsername)
  const content = utf8Size(message.content)
  const type = utf8Size(message.type)
  const meta = message.sessionMeta
  const metaName = meta === undefined ? 0 : utf8Size(meta.name)
  const metaBody = meta === undefined ? 0 : (metaName > 0 ? fieldSize(metaName) : 0) + (meta.type !== 0 ? 1 + int32Size(meta.type) : 0)
  const body = (message.msgId !== 0n ? 1 + int64Size(message.msgId) : 0) +
    (message.seqId !== 0n ? 1 + int64Size(message.seqId) : 0) +
    (session > 0 ? fieldSize(session) : 0) +
    (from > 0 ? fieldSize(from) : 0) +
    (to > 0 ? fieldSize(to) : 0) +
    (content > 0 ? fieldSize(content) : 0) +
    (type > 0 ? fieldSize(type) : 0) +
    (message.timestamp !== 0n ? 1 + int64Size(message.timestamp) : 0) +
    (meta !== undefined ? fieldSize(metaBody) : 0)
  const out = new Cursor(Buffer.allocUnsafe((seqBytes > 0 ? fieldSize(seqBytes) : 0) + fieldSize(body)))
  if (seqBytes > 0) {
    out.byte(10)
    out.string(seq, seqBytes)
  }
  out.byte(98)
  out.varint32(body)
  if (message.msgId !== 0n) {
    out.byte(8)
    out.int64(message.msgId)
  }
  if (message.seqId !== 0n) {
    out.byte(16)
    out.int64(message.seqId)
  }
  if (session > 0) {
    out.byte(26)
    out.string(message.sessionId, session)
  }
  if (from > 0) {
    out.byte(34)
    out.string(message.fromUsername, from)
  }
  if (to > 0) {
    out.byte(42)
    out.string(message.toUsername, to)
  }
  if (content > 0) {
    out.byte(50)
    out.string(message.content, content)
  }
  if (type > 0) {
    out.byte(58)
    out.string(message.type, type)
  }
  if (message.timestamp !== 0n) {
    out.byte(64)
    out.int64(message.timestamp)
  }
  if (meta !== undefined) {
    out.byte(82)
    out.varint32(metaBody)
    if (metaName > 0) {
      out.byte(10)
      out.string(meta.name, metaName)
    }
    if (meta.type !== 0) {
      out.byte(16)
      out.int32(meta.type)
    }
  }
  return out.buf
}

/** WsPacket { seq, ack }. */
export const encodeAckFrame = (seq: string, ack: AckBody): Buffer => {
  const seqBytes = utf8Size(seq)
  const refSeq = utf8Size(ack.refSeq)
  const session = utf8Size(ack.sessionId)
  const error = utf8Size(ack.error)
  const body = (refSeq > 0 ? fieldSize(refSeq) : 0) +
    (ack.msgId !== 0n ? 1 + int64Size(ack.msgId) : 0) +
    (ack.seqId !== 0n ? 1 + int64Size(ack.seqId) : 0) +
    (session > 0 ? fieldSize(session) : 0) +
    (error > 0 ? fieldSize(error) : 0)
  const out = new Cursor(Buffer.allocUnsafe((seqBytes > 0 ? fieldSize(seqBytes) : 0) + fieldSize(body)))
  if (seqBytes > 0) {
    out.byte(10)
    out.string(seq, seqBytes)
  }
  out.byte(106)
  out.varint32(body)
  if (refSeq > 0) {
    out.byte(10)
    out.string(ack.refSeq, refSeq)
  }
  if (ack.msgId !== 0n) {
    out.byte(16)
    out.int64(ack.msgId)
  }
  if (ack.seqId !== 0n) {
    out.byte(24)
    out.int64(ack.seqId)
  }
  if (session > 0) {
    out.byte(34)
    out.string(ack.sessionId, session)
  }
  if (error > 0) {
    out.byte(42)
    out.string(ack.error, error)
  }
  return out.buf
}

/** WsPacket { seq, pulse {} }. */
export const encodePulseFrame = (seq: string): Buffer => {
  const seqBytes = utf8Size(seq)
  const out = new Cursor(Buffer.allocUnsafe((seqBytes > 0 ? fieldSize(seqBytes) : 0) + 2))
  if (seqBytes > 0) {
    out.byte(10)
    out.string(seq, seqBytes)
  }
  out.byte(82)
  out.byte(0)
  return out.buf
}
