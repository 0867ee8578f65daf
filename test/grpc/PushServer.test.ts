import * as grpc from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as Http2 from "node:http2"
import * as Net from "node:net"
import { pushTargets } from "../../src/adapters/grpc-push/PushServer.js"
import { pushClient } from "../../src/adapters/logic-server/GatewayPush.js"
import type { LiveConnection } from "../../src/application/ports/LiveConnection.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import type { PushMessage } from "../../src/domain/Model.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { PushRequest, PushServiceClient } from "../../src/gen/gateway/v1/push.js"
import { grpcFrame } from "../../src/adapters/platform/grpc/UnaryServer.js"
import { recordingMetrics, recordingTracer, servePush } from "./support.js"

const message: PushMessage = {
  msgId: 9_223_372_036_854_775_000n,
  seqId: 77n,
  sessionId: "0",
  fromUsername: "alice",
  toUsername: "",
  content: "hello room",
  type: "text",
  timestamp: 1_700_000_000n,
  sessionMeta: { name: "Resonance Room", type: 2 }
}

let nextConnectionId = 1

/** A connection that keeps the frames written to it; `accepts` false models a closed or lagging socket. */
const fakeConnection = (username: string, accepts = true) => {
  const frames: Array<Uint8Array> = []
  const connection: LiveConnection = {
    info: {
      id: nextConnectionId++,
      username,
      remoteAddress: "127.0.0.1",
      connectedAt: Date.now(),
      expiresAt: undefined,
      tokenId: `token-of-${username}`
    },
    send: (frame) => {
      if (!accepts) return false
      frames.push(frame)
      return true
    },
    close: () => {},
    pauseReads: () => {},
    resumeReads: () => {}
  }
  return { connection, frames }
}

/** A real PushService on an ephemeral port over a real hub, delivery and codec. */
const testPushClient = (address: string, options?: Parameters<typeof pushClient>[1]) =>
  pushClient(address, options).pipe(Effect.provide(InternalAuth.layerTest))

const startPushServer = Effect.gen(function*() {
  const metrics = recordingMetrics()
  const { hub, port } = yield* servePush({ metrics: metrics.shape })
  const client = yield* testPushClient(`grpc://127.0.0.1:${port}`)
  return { hub, port, client, metrics }
})

describe("PushServer", () => {
  it("pushTargets drops blanks and duplicates, keeping order", () => {
    expect(pushTargets(["bob", " ", "alice", "bob", "", "carol", "alice"])).toStrictEqual(["bob", "alice", "carol"])
  })

  it.scopedLive("reports exactly the offline targets as failed and echoes msg_id", () =>
    Effect.gen(function*() {
      const { client, hub, metrics } = yield* startPushServer
      const alice = fakeConnection("alice")
      const bobPhone = fakeConnection("bob")
      const bobLaptop = fakeConnection("bob")
      for (const device of [alice, bobPhone, bobLaptop]) hub.add(device.connection)

      const response = yield* client.push({
        toUsernames: ["alice", "carol", "bob", "alice", "dave", "carol"],
        message
      })
      expect(response).toStrictEqual({ msgId: message.msgId, error: "", failedUsernames: ["carol", "dave"] })
      expect(alice.frames).toHaveLength(1)
      expect(bobPhone.frames).toHaveLength(1)
      expect(bobLaptop.frames).toHaveLength(1)
      expect(metrics.grpc).toStrictEqual([{ method: "PushService/Push", code: "OK" }])
    }))

  it.scopedLive("a user whose only device refuses the frame is failed; one working device is enough", () =>
    Effect.gen(function*() {
      const { client, hub } = yield* startPushServer
      const erinOnly = fakeConnection("erin", false)
      const frankStuck = fakeConnection("frank", false)
      const frankOk = fakeConnection("frank")
      for (const device of [erinOnly, frankStuck, frankOk]) hub.add(device.connection)

      const response = yield* client.push({ toUsernames: ["erin", "frank"], message })
      expect(response.failedUsernames).toStrictEqual(["erin"])
      expect(frankOk.frames).toHaveLength(1)
    }))

  it.scopedLive("delivers one WsPacket push frame carrying the message", () =>
    Effect.gen(function*() {
      const { client, hub } = yield* startPushServer
      const alice = fakeConnection("alice")
      const bob = fakeConnection("bob")
      hub.add(alice.connection)
      hub.add(bob.connection)
      yield* client.push({ toUsernames: ["alice", "bob"], message })

      expect(alice.frames).toHaveLength(1)
      expect(bob.frames[0]).toBe(alice.frames[0])
      const packet = WsPacket.decode(alice.frames[0]!)
      expect(packet.payload).toStrictEqual({ $case: "push", value: message })
    }))

  it.scopedLive("no targets is OK with nothing failed, as the Go gateway answers; no message is INVALID_ARGUMENT", () =>
    Effect.gen(function*() {
      const { client, hub, metrics } = yield* startPushServer
      const alice = fakeConnection("alice")
      hub.add(alice.connection)

      expect(yield* client.push({ toUsernames: [], message })).toStrictEqual({ msgId: message.msgId, error: "", failedUsernames: [] })
      expect((yield* client.push({ toUsernames: ["", "  "], message })).failedUsernames).toStrictEqual([])
      const noMessage = yield* Effect.flip(client.push({ toUsernames: ["alice"], message: undefined }))
      expect(noMessage).toMatchObject({ code: "invalid_argument", message: "message is required" })

      expect(alice.frames).toHaveLength(0)
      expect(metrics.grpc.map((entry) => entry.code)).toStrictEqual(["OK", "OK", "INVALID_ARGUMENT"])
    }))

  it.scopedLive("a target named twice gets the push once", () =>
    Effect.gen(function*() {
      const { client, hub } = yield* startPushServer
      const alice = fakeConnection("alice")
      hub.add(alice.connection)
      yield* client.push({ toUsernames: ["alice", "alice", " alice"], message })
      expect(alice.frames).toHaveLength(1)
    }))

  it.scopedLive("each Push gets a server span continuing the caller's trace", () =>
    Effect.gen(function*() {
      const recording = yield* recordingTracer
      yield* Effect.gen(function*() {
        const { client, hub } = yield* startPushServer
        hub.add(fakeConnection("alice").connection)
        yield* client.push({ toUsernames: ["alice"], message }).pipe(Effect.withSpan("task.root"))
      }).pipe(Effect.withTracer(recording.tracer))

      const clientSpan = recording.spans.find((span) => span.name === "PushService.Push")
      const serverSpan = recording.spans.find((span) => span.name === "resonance.gateway.v1.PushService/Push")
      expect(clientSpan?.kind).toBe("client")
      expect(serverSpan?.kind).toBe("server")
      expect(serverSpan?.traceId).toBe(clientSpan?.traceId)
      expect(Option.map(serverSpan!.parent, (parent) => parent.spanId)).toStrictEqual(Option.some(clientSpan!.spanId))
      expect(serverSpan?.attributes.get("push.failed")).toBe(0)
    }))

  it.scopedLive("a caller refused too often (bad tokens) loses its connection", () =>
    Effect.gen(function*() {
      const { port } = yield* servePush({ config: { internal: { insecure: false, token: "the-token" } } })
      const client = new PushServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      const push = (token: string) =>
        Effect.async<grpc.status, never>((resume) => {
          const metadata = new grpc.Metadata()
          metadata.set("authorization", `Bearer ${token}`)
          client.push({ toUsernames: ["alice"], message }, metadata, { deadline: Date.now() + 3_000 }, (error) =>
            resume(Effect.succeed(error ? error.code : grpc.status.OK)))
        })
      const codes: Array<grpc.status> = []
      while (codes.length < 500 && codes.at(-1) !== grpc.status.RESOURCE_EXHAUSTED) codes.push(yield* push("guessed"))
      // Refused until past the unary server's burst of refusals (50, refilled at 20 a second)...
      const refused = codes.slice(0, -1)
      expect(refused.length).toBeGreaterThanOrEqual(50)
      expect(refused).toEqual(Array(refused.length).fill(grpc.status.UNAUTHENTICATED))
      // ...then the next guess finds its connection cut: GOAWAY ENHANCE_YOUR_CALM, which grpc-js reads as RESOURCE_EXHAUSTED.
      expect(codes.at(-1)).toBe(grpc.status.RESOURCE_EXHAUSTED)
      // The front door turns its address away for a while, even with the right token...
      expect(yield* push("the-token")).toBe(grpc.status.UNAVAILABLE)
      // ...and only its address: the Task service elsewhere is served.
      const elsewhere = yield* Effect.async<string>((resume) => {
        const session = Http2.connect(`http://127.0.0.1:${port}`, {
          createConnection: () => Net.connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" })
        })
        session.on("error", () => resume(Effect.succeed("connection error")))
        const stream = session.request({
          ":method": "POST",
          ":path": "/resonance.gateway.v1.PushService/Push",
          "content-type": "application/grpc",
          te: "trailers",
          authorization: "Bearer the-token"
        })
        stream.on("error", () => {})
        stream.on("data", () => {})
        stream.on("trailers", (trailers) => {
          session.close()
          resume(Effect.succeed(String(trailers["grpc-status"])))
        })
        stream.end(grpcFrame(PushRequest.encode({ toUsernames: ["alice"], message }).finish()))
      })
      expect(elsewhere).toBe("0")
    }))

  it.scopedLive("stops serving when its scope closes", () =>
    Effect.gen(function*() {
      const { port } = yield* Effect.scoped(Effect.map(startPushServer, ({ port }) => ({ port })))
      const client = yield* testPushClient(`127.0.0.1:${port}`, { deadline: "2 seconds" })
      const error = yield* Effect.flip(client.push({ toUsernames: ["alice"], message }))
      expect(error.code).toBe("unavailable")
    }))
})
