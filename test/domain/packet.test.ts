import { describe, expect, it } from "@effect/vitest"
import type { ChatRequest } from "../../src/domain/Model.js"
import type { Packet } from "../../src/domain/Packet.js"
import { ackPacket, classifyInbound, errorAck, pulsePacket, pushPacket, validateChat } from "../../src/domain/Packet.js"

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

  it("fills a missing timestamp with the current time and keeps a given one", () => {
    const filled = classifyInbound(chatPacket("1", chat({ timestamp: 0n })), "alice", 1234n)
    const kept = classifyInbound(chatPacket("2", chat({ timestamp: 99n })), "alice", 1234n)
    expect(filled._tag === "ForwardChat" && filled.chat.timestamp).toBe(1234n)
    expect(kept._tag === "ForwardChat" && kept.chat.timestamp).toBe(99n)
  })

  it("defaults an empty type to text", () => {
    const decision = classifyInbound(chatPacket("1", chat({ type: "" })), "alice", 1n)
    expect(decision._tag === "ForwardChat" && decision.chat.type).toBe("text")
  })

  it("rejects a chat without session or content with an error ack echoing seq", () => {
    const noSession = classifyInbound(chatPacket("9", chat({ sessionId: "" })), "alice", 1n)
    expect(noSession).toEqual({ _tag: "Reject", reply: errorAck("9", "session_id is required", "") })
    const noContent = classifyInbound(chatPacket("10", chat({ content: "" })), "alice", 1n)
    expect(noContent._tag).toBe("Reject")
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
