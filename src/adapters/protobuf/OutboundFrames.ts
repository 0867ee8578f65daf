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

const int32Size = (value: number): number => {
  if (!Number.isInteger(value) || value > 0x7fff_ffff || value < -0x8000_0000) throw new Error(`int32 out of range: ${value}`)
  return value >= 0 ? varint32Size(value) : 10
}

const fieldSize = (bytes: number): number => 1 + varint32Size(bytes) + bytes

/** A string field of `bytes` UTF-8 bytes, left out when empty (proto3). */
const stringFieldSize = (bytes: number): number => (bytes > 0 ? fieldSize(bytes) : 0)

/** An int64 field, left out when 0 (proto3). */
const int64FieldSize = (value: bigint): number => (value !== 0n ? 1 + int64Size(value) : 0)

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

  /** Field `tag` (its key byte) holding `value`; nothing when 0. */
  int64Field(tag: number, value: bigint): void {
    if (value === 0n) return
    this.byte(tag)
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

  /** Field `tag` (its key byte) holding `text`, whose `utf8Size` is `bytes`; nothing when empty. */
  stringField(tag: number, text: string, bytes: number): void {
    if (bytes === 0) return
    this.byte(tag)
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

/**
 * A frame of `seq` and one payload field (key byte `payloadTag`) of `body` bytes, written up to
 * the payload's own fields.
 */
const openFrame = (seq: string, payloadTag: number, body: number): Cursor => {
  const seqBytes = utf8Size(seq)
  const out = new Cursor(Buffer.allocUnsafe(stringFieldSize(seqBytes) + fieldSize(body)))
  out.stringField(10, seq, seqBytes)
  out.byte(payloadTag)
  out.varint32(body)
  return out
}

/** WsPacket { seq, push: message }. */
export const encodePushFrame = (seq: string, message: PushMessage): Buffer => {
  const session = utf8Size(message.sessionId)
  const from = utf8Size(message.fromUsername)
  const to = utf8Size(message.toUsername)
  const content = utf8Size(message.content)
  const type = utf8Size(message.type)
  const meta = message.sessionMeta
  const metaName = meta === undefined ? 0 : utf8Size(meta.name)
  const metaBody = meta === undefined ? 0 : stringFieldSize(metaName) + (meta.type !== 0 ? 1 + int32Size(meta.type) : 0)
  const body = int64FieldSize(message.msgId) +
    int64FieldSize(message.seqId) +
    stringFieldSize(session) +
    stringFieldSize(from) +
    stringFieldSize(to) +
    stringFieldSize(content) +
    stringFieldSize(type) +
    int64FieldSize(message.timestamp) +
    (meta !== undefined ? fieldSize(metaBody) : 0)
  const out = openFrame(seq, 98, body)
  out.int64Field(8, message.msgId)
  out.int64Field(16, message.seqId)
  out.stringField(26, message.sessionId, session)
  out.stringField(34, message.fromUsername, from)
  out.stringField(42, message.toUsername, to)
  out.stringField(50, message.content, content)
  out.stringField(58, message.type, type)
  out.int64Field(64, message.timestamp)
  if (meta !== undefined) {
    out.byte(82)
    out.varint32(metaBody)
    out.stringField(10, meta.name, metaName)
    if (meta.type !== 0) {
      out.byte(16)
      out.int32(meta.type)
    }
  }
  return out.buf
}

/** WsPacket { seq, ack }. */
export const encodeAckFrame = (seq: string, ack: AckBody): Buffer => {
  const refSeq = utf8Size(ack.refSeq)
  const session = utf8Size(ack.sessionId)
  const error = utf8Size(ack.error)
  const body = stringFieldSize(refSeq) +
    int64FieldSize(ack.msgId) +
    int64FieldSize(ack.seqId) +
    stringFieldSize(session) +
    stringFieldSize(error)
  const out = openFrame(seq, 106, body)
  out.stringField(10, ack.refSeq, refSeq)
  out.int64Field(16, ack.msgId)
  out.int64Field(24, ack.seqId)
  out.stringField(34, ack.sessionId, session)
  out.stringField(42, ack.error, error)
  return out.buf
}

/** WsPacket { seq, pulse {} }. */
export const encodePulseFrame = (seq: string): Buffer => openFrame(seq, 82, 0).buf
