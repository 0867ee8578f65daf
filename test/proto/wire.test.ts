import { describe, expect, it } from "@effect/vitest"
import * as CommonTypes from "../../src/gen/common/v1/types.js"
import * as GatewayApi from "../../src/gen/gateway/v1/api.js"
import * as GatewayPacket from "../../src/gen/gateway/v1/packet.js"
import * as GatewayPush from "../../src/gen/gateway/v1/push.js"
import * as LogicAuth from "../../src/gen/logic/v1/auth.js"
import * as LogicChat from "../../src/gen/logic/v1/chat.js"
import * as LogicPresence from "../../src/gen/logic/v1/presence.js"
import * as LogicSession from "../../src/gen/logic/v1/session.js"

interface Fns {
  encode(message: unknown): { finish(): Uint8Array }
  decode(input: Uint8Array): unknown
  fromPartial(object: unknown): unknown
  toJSON(message: unknown): unknown
  fromJSON(object: unknown): unknown
}

const modules = { CommonTypes, GatewayApi, GatewayPacket, GatewayPush, LogicAuth, LogicChat, LogicPresence, LogicSession }

const messageFns = Object.entries(modules).flatMap(([moduleName, mod]) =>
  Object.entries(mod)
    .filter(([, value]) => typeof value === "object" && value !== null && "encode" in value && "fromPartial" in value)
    .map(([name, fns]) => [`${moduleName}.${name}`, fns as unknown as Fns] as const)
)

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

// A message with every scalar set to a non-default value, nested messages filled one level deep.
const sampleOf = (fns: Fns, depth = 0): unknown => {
  const empty = fns.fromPartial({}) as Record<string, unknown>
  const filled: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(empty)) {
    if (typeof value === "string") filled[key] = `${key}-value`
    else if (typeof value === "bigint") filled[key] = 9007199254740993n + BigInt(key.length)
    else if (typeof value === "number") filled[key] = 3
    else if (typeof value === "boolean") filled[key] = true
    else if (Array.isArray(value)) filled[key] = []
  }
  void depth
  return fns.fromPartial(filled)
}

describe("wire contract", () => {
  it("generated code covers every message of WIRE.md", () => {
    const names = messageFns.map(([name]) => name)
    for (const expected of [
      "CommonTypes.User",
      "GatewayPacket.WsPacket",
      "GatewayPacket.Pulse",
      "GatewayPacket.ChatRequest",
      "GatewayPacket.SessionMeta",
      "GatewayPacket.PushMessage",
      "GatewayPacket.Ack",
      "GatewayPush.PushRequest",
      "GatewayPush.PushResponse",
      "GatewayApi.PullInboxDeltaResponse",
      "GatewayApi.InboxEvent",
      "LogicAuth.ValidateTokenResponse",
      "LogicChat.SendMessageRequest",
      "LogicPresence.SyncStatusRequest",
      "LogicPresence.UserOnline",
      "LogicPresence.UserOffline",
      "LogicSession.CreateSessionRequest",
      "LogicSession.UpdateReadPositionRequest"
    ]) {
      expect(names).toContain(expected)
    }
    expect(names.length).toBeGreaterThanOrEqual(60)
  })

  it.each(messageFns)("%s survives binary and JSON round trips", (_name, fns) => {
    const sample = sampleOf(fns)
    const bytes = fns.encode(sample).finish()
    expect(fns.decode(bytes)).toEqual(sample)
    expect(fns.fromJSON(JSON.parse(JSON.stringify(fns.toJSON(sample))))).toEqual(sample)
  })

  it("encodes a pulse packet with field 10", () => {
    const bytes = GatewayPacket.WsPacket.encode({ seq: "1", payload: { $case: "pulse", value: {} } }).finish()
    expect(hex(bytes)).toBe("0a0131" + "5200")
  })

  it("encodes a chat packet with field 11 and chat fields 3..8", () => {
    const bytes = GatewayPacket.WsPacket.encode({
      seq: "",
      payload: {
        $case: "chat",
        value: { sessionId: "s", fromUsername: "a", toUsername: "b", content: "hi", type: "text", timestamp: 1n }
      }
    }).finish()
    // 0x5a = field 11 LEN; then 0x1a (3) "s", 0x22 (4) "a", 0x2a (5) "b", 0x32 (6) "hi", 0x3a (7) "text", 0x40 (8) varint 1
    expect(hex(bytes)).toBe("5a15" + "1a0173" + "220161" + "2a0162" + "32026869" + "3a0474657874" + "4001")
  })

  it("encodes push field 12, session_meta field 10 and ack field 13", () => {
    const push = GatewayPacket.WsPacket.encode({
      seq: "",
      payload: {
        $case: "push",
        value: {
          msgId: 300n,
          seqId: 2n,
          sessionId: "",
          fromUsername: "",
          toUsername: "",
          content: "",
          type: "",
          timestamp: 0n,
          sessionMeta: { name: "r", type: 2 }
        }
      }
    }).finish()
    expect(hex(push)).toBe("620c" + "08ac02" + "1002" + "5205" + "0a0172" + "1002")
    const ack = GatewayPacket.WsPacket.encode({
      seq: "7",
      payload: { $case: "ack", value: { refSeq: "7", msgId: 1n, seqId: 0n, sessionId: "", error: "no" } }
    }).finish()
    expect(hex(ack)).toBe("0a0137" + "6a09" + "0a0137" + "1001" + "2a026e6f")
  })

  it("keeps 64-bit snowflake ids exact", () => {
    const msgId = 7318624519394279425n
    const bytes = GatewayPush.PushResponse.encode({ msgId, error: "", failedUsernames: ["x"] }).finish()
    expect(GatewayPush.PushResponse.decode(bytes).msgId).toBe(msgId)
    expect(GatewayPush.PushResponse.toJSON({ msgId, error: "", failedUsernames: [] })).toEqual({ msgId: "7318624519394279425" })
  })

  it("SyncStatusRequest and SendMessageRequest use the contract's field numbers", () => {
    const sync = LogicPresence.SyncStatusRequest.encode({
      seqId: 1n,
      gatewayId: "g",
      onlineBatch: [{ username: "u", remoteIp: "i", timestamp: 2n }],
      offlineBatch: [{ username: "v", timestamp: 3n }]
    }).finish()
    expect(hex(sync)).toBe("0801" + "120167" + "1a08" + "0a0175" + "120169" + "1802" + "2205" + "0a0176" + "1003")
    const send = LogicChat.SendMessageRequest.encode({
      sessionId: "s",
      fromUsername: "",
      toUsername: "",
      content: "",
      type: "",
      timestamp: 5n,
      idempotencyKey: ""
    }).finish()
    expect(hex(send)).toBe("1a0173" + "4005")
    // The gateway's addition, field 9 (1 and 2 stay reserved): a Logic that does not know it skips it.
    const keyed = LogicChat.SendMessageRequest.encode({ ...LogicChat.SendMessageRequest.decode(send), idempotencyKey: "k" }).finish()
    expect(hex(keyed)).toBe("1a0173" + "4005" + "4a016b")
  })

  it("proto3 JSON uses lowerCamelCase and accepts int64 as strings or numbers", () => {
    expect(GatewayApi.LoginResponse.toJSON({ accessToken: "t", user: { username: "a", nickname: "A", avatarUrl: "" } }))
      .toEqual({ accessToken: "t", user: { username: "a", nickname: "A" } })
    expect(GatewayApi.PullInboxDeltaRequest.fromJSON({ limit: "200" }).limit).toBe(200n)
    expect(GatewayApi.PullInboxDeltaRequest.fromJSON({ limit: 200, cursorId: "5" }).cursorId).toBe(5n)
  })
})
