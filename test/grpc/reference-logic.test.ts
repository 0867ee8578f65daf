import { describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, Context, Effect, Layer, SubscriptionRef } from "effect"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import * as LogicEmbedded from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import * as ReferenceLogic from "../../src/adapters/logic-server/ReferenceLogic.js"
import type { GatewayInstance } from "../../src/adapters/logic-server/ReferenceLogic.js"
import { Committed } from "../../src/application/Committed.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import { directSessionId } from "../../src/domain/Session.js"
import type { ChatRequest } from "../../src/domain/Model.js"
import { fakeConnection } from "../support/helpers.js"
import { eventually, servePush, staticClient } from "./support.js"

const SECRET = "test-secret-key-that-is-long-enough-for-hs256"

const chat = (content: string): ChatRequest => ({
  sessionId: directSessionId("alice", "bob"),
  fromUsername: "alice",
  toUsername: "bob",
  content,
  type: "text",
  timestamp: 0n
})

/**
 * The reference Logic as `npm run logic` composes it, each part reading its own configuration, on
 * SQLite in memory, pushing what the embedded Logic commits to one real PushService (gateway
 * `gw-1`); and a gRPC client of it.
 */
const cluster = Effect.gen(function*() {
  const gateway = yield* servePush()
  const gateways = yield* SubscriptionRef.make<ReadonlyArray<GatewayInstance>>([
    { id: "gw-1", address: `127.0.0.1:${gateway.port}` }
  ])
  const context = yield* Layer.build(
    ReferenceLogic.layerConfig.pipe(
      Layer.provideMerge(LogicEmbedded.layerConfig),
      Layer.provide(Committed.layer),
      Layer.provide(Layer.succeed(ReferenceLogic.LiveGateways, gateways)),
      Layer.provide(Metrics.layerNoop),
      Layer.provide(InternalAuth.layerTest),
      Layer.provide(FrontDoor.layerTest()),
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromJson({
        service: { grpc_port: 0, grpc_host: "127.0.0.1" },
        embedded: { database_path: ":memory:" },
        auth: { secret_key: SECRET, bcrypt_cost: 4 }
      }))),
      Layer.orDie
    )
  )
  const { port } = Context.get(context, ReferenceLogic.ReferenceLogic)
  const logic = Context.get(context, Logic)
  const client = yield* staticClient([`127.0.0.1:${port}`])
  for (const username of ["alice", "bob"]) yield* logic.register({ username, password: "secret-pw", nickname: username })
  yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
  return { hub: gateway.hub, logic, client }
})

const contents = (connection: ReturnType<typeof fakeConnection>) =>
  connection.packets().flatMap((p) => (p.payload?.$case === "push" ? [p.payload.value.content] : []))

describe("the reference Logic's catch-up after a user comes online", () => {
  it.scopedLive("a message committed before the user's route reached Logic is pushed once it does", () =>
    Effect.gen(function*() {
      const { hub, logic, client } = yield* cluster
      const bob = fakeConnection("bob")
      hub.add(bob)
      const openedAt = BigInt(Math.floor((yield* Clock.currentTimeMillis) / 1000))
      // Bob's socket is open at gw-1, but Logic has no route for him yet: this push reaches nobody.
      yield* logic.sendMessage(chat("before the route"))
      yield* client.syncStatus({
        seqId: 1n,
        gatewayId: "gw-1",
        onlineBatch: [{ username: "bob", remoteIp: "10.0.0.2", timestamp: openedAt }],
        offlineBatch: []
      })
      yield* eventually(Effect.filterOrFail(Effect.sync(() => contents(bob)), (seen) => seen.length >= 2))
      // The catch-up holds the session's first (system) message too: both, oldest first.
      expect(contents(bob)).toEqual(["alice 开始了与你的对话", "before the route"])

      yield* logic.sendMessage(chat("after the route"))
      yield* eventually(Effect.filterOrFail(Effect.sync(() => contents(bob)), (seen) => seen.length >= 3))
      expect(contents(bob)).toEqual(["alice 开始了与你的对话", "before the route", "after the route"])
    }))

  it.scopedLive("what the inbox gained before the socket opened (less the margin) is not pushed again", () =>
    Effect.gen(function*() {
      const { hub, logic, client } = yield* cluster
      yield* logic.sendMessage(chat("long before"))
      const bob = fakeConnection("bob")
      hub.add(bob)
      // A socket that opened 10 s from now: the margin (2 s) does not reach back to "long before".
      const openedAt = BigInt(Math.floor((yield* Clock.currentTimeMillis) / 1000) + 10)
      yield* client.syncStatus({
        seqId: 1n,
        gatewayId: "gw-1",
        onlineBatch: [{ username: "bob", remoteIp: "10.0.0.2", timestamp: openedAt }],
        offlineBatch: []
      })
      yield* logic.sendMessage(chat("after the route"))
      yield* eventually(Effect.filterOrFail(Effect.sync(() => contents(bob)), (seen) => seen.length >= 1))
      // Nothing else comes: the catch-up found nothing after its start.
      yield* Effect.sleep("300 millis")
      expect(contents(bob)).toEqual(["after the route"])
    }))
})
