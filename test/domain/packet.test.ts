import { describe, expect, it } from "@effect/vitest"
import type { ChatRequest } from "../../src/domain/Model.js"
import type { Packet } from "../../src/domain/Packet.js"
import { ackPacket, classifyInbound as classify, errorAck, exceedsUtf8, pulsePacket, pushPacket, validateChat as validate } from "../../src/domain/Packet.js"

const rules = { maxContentBytes: 64 * 1024 }
const classifyInbound = (packet: Packet, username: string, now: bigint) => classify(packet, username, now, rules)
const validateChat = (value: ChatRequest) => validate(value, rules)

const chat = (overrides: Partial<ChatRequest> = {}): ChatRequest => ({
  sessionId: "single:a:b",
  fromUsername: "mallory",
  toUsername: "b",
  content: "hello",
  type: "text",
  timestamp: 0n,
  ...overrides
})

const chatPacket = (seq: string, value: ChatRequest): Packet => ({ seq, payload: { $case: "chat", value } })

describe("classifyInbound", () => {
  it("answers a pulse with a pulse echoing the seq", () => {
    const decision = classifyInbound(pulsePacket("p1"), "alice", 100n)
    expect(decision).toEqual({ _tag: "ReplyPulse", reply: pulsePacket("p1") })
  })

  it("forces from_username to the authenticated user", () => {
    const decision = classifyInbound(chatPacket("1", chat({ fromUsername: "mallory" })), "alice", 100n)
    expect(decision._tag).toBe("ForwardChat")
    if (decision._tag === "ForwardChat") expect(decision.chat.fromUsername).toBe("alice")
  })

  it("stamps every chat with the server's time: a client's timestamp is not trusted", () => {
    const filled = classifyInbound(chatPacket("1", chat({ timestamp: 0n })), "alice", 1234n)
    const future = classifyInbound(chatPacket("2", chat({ timestamp: 4_102_444_800n })), "alice", 1234n)
    expect(filled._tag === "ForwardChat" && filled.chat.timestamp).toBe(1234n)
    expect(future._tag === "ForwardChat" && future.chat.timestamp).toBe(1234n)
  })

  it("defaults an empty type to text", () => {
    const decision = classifyInbound(chatPacket("1", chat({ type: "" })), "alice", 1n)
    expect(decision._tag === "ForwardChat" && decision.chat.type).toBe("text")
  })

  it("rejects a chat naming neither session nor recipient, or without content, with an error ack echoing seq", () => {
    const nowhere = classifyInbound(chatPacket("9", chat({ sessionId: "", toUsername: "" })), "alice", 1n)
    expect(nowhere).toEqual({ _tag: "Reject", reply: errorAck("9", "session_id or to_username is required", "") })
    const noContent = classifyInbound(chatPacket("10", chat({ content: "" })), "alice", 1n)
    expect(noContent._tag).toBe("Reject")
  })

  it("forwards a direct chat that names only the recipient", () => {
    const decision = classifyInbound(chatPacket("11", chat({ sessionId: "", toUsername: "bob" })), "alice", 1n)
    expect(decision._tag === "ForwardChat" && decision.chat.toUsername).toBe("bob")
  })

  it("refuses content over the limit, counted in UTF-8 bytes", () => {
    const small = { maxContentBytes: 10 }
    expect(validate(chat({ content: "0123456789" }), small)).toBeUndefined()
    expect(validate(chat({ content: "01234567890" }), small)).toBe("content is larger than 10 bytes")
    // Four 3-byte characters are 12 bytes, two 4-byte emoji 8.
    expect(validate(chat({ content: "你好世界" }), small)).toBe("content is larger than 10 bytes")
    expect(validate(chat({ content: "😀😀" }), small)).toBeUndefined()
    expect(validateChat(chat({ content: "x".repeat(64 * 1024 + 1) }))).toBe("content is larger than 65536 bytes")
    for (const text of ["abc", "é", "你", "😀", "a😀b你"]) {
      expect(exceedsUtf8(text, Buffer.byteLength(text) - 1), text).toBe(true)
      expect(exceedsUtf8(text, Buffer.byteLength(text)), text).toBe(false)
    }
  })

  it("rejects unknown message types and client system messages", () => {
    expect(validateChat(chat({ type: "sticker" }))).toMatch(/unknown message type/)
    expect(validateChat(chat({ type: "system" }))).toMatch(/system/)
    for (const type of ["text", "image", "file", "audio", "video"]) expect(validateChat(chat({ type }))).toBeUndefined()
  })

  it("records a client ack, taking msg_id from ref_seq", () => {
    const packet: Packet = {
      seq: "",
      payload: { $case: "ack", value: { refSeq: "7318624519394279425", msgId: 0n, seqId: 0n, sessionId: "", error: "" } }
    }
    const decision = classifyInbound(packet, "alice", 1n)
    expect(decision._tag === "RecordDelivery" && decision.msgId).toBe(7318624519394279425n)
  })

  it("refuses a push frame from a client", () => {
    const packet = { ...pushPacket({} as never), seq: "3" }
    const decision = classifyInbound(packet, "alice", 1n)
    expect(decision._tag).toBe("Reject")
    if (decision._tag === "Reject") expect(decision.reply.payload?.$case === "ack" && decision.reply.payload.value.refSeq).toBe("3")
  })

  it("answers a packet without payload as unknown", () => {
    const decision = classifyInbound({ seq: "4", payload: undefined }, "alice", 1n)
    expect(decision).toEqual({ _tag: "Reject", reply: errorAck("4", "unknown packet type") })
  })

  it("ack packets carry seq in both seq and ref_seq", () => {
    const ack = ackPacket("s1", { msgId: 5n, seqId: 6n, sessionId: "x", error: "" })
    expect(ack.seq).toBe("s1")
    expect(ack.payload).toEqual({ $case: "ack", value: { refSeq: "s1", msgId: 5n, seqId: 6n, sessionId: "x", error: "" } })
  })
})
