import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Scope, SubscriptionRef } from "effect"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import { withFrontDoor } from "../support/door.js"
import { buildLogic, chat, fakeLogic } from "./support.js"

const logic = fakeLogic({ sendMessage: () => Effect.succeed({ msgId: 1n, seqId: 1n }) })

/** A Logic instance on `port` (0: any), stopped when `scope` closes. */
const startLogic = (port: number, scope: Scope.Scope) =>
  serveLogic(logic, { port, host: "127.0.0.1", shutdownTimeout: "100 millis" }).pipe(
    Effect.provide(InternalAuth.layerTest),
    withFrontDoor,
    Scope.extend(scope),
    Effect.map((served) => served.port)
  )

/**
 * The gateway's side of a Logic restart: the instance goes away, calls fail for a few seconds (so
 * grpc-js's reconnect backoff to its address has grown to its 2 s cap), then a new instance at the
 * same address is announced by discovery as `announce` says.
 */
const restartScenario = (announce: (endpoints: SubscriptionRef.SubscriptionRef<ReadonlyArray<string>>, address: string) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const first = yield* Scope.make()
    const port = yield* startLogic(0, first)
    const address = `127.0.0.1:${port}`
    const endpoints = yield* SubscriptionRef.make<ReadonlyArray<string>>([address])
    // The gateway's defaults (logic.timeout 5 s would wait the backoff out: a short budget shows it).
    const client: LogicShape = yield* buildLogic(
      LogicGrpc.layer({ endpoints: Effect.succeed(endpoints), deadline: "400 millis", retries: 2 })
    )
    expect(yield* client.sendMessage(chat)).toStrictEqual({ msgId: 1n, seqId: 1n })

    yield* Scope.close(first, Exit.void)
    const deadline = Date.now() + 3_000
    while (Date.now() < deadline) {
      expect((yield* Effect.flip(client.sendMessage(chat))).code).toBe("unavailable")
      yield* Effect.sleep("100 millis")
    }

    yield* startLogic(port, yield* Effect.scope)
    yield* announce(endpoints, address)
    yield* Effect.sleep("100 millis")
    return yield* Effect.either(client.sendMessage(chat))
  })

describe("LogicGrpc after a Logic restart", () => {
  it.scopedLive("a chat 100 ms after the new instance is announced succeeds (the old entry had expired first)", () =>
    Effect.gen(function*() {
      const result = yield* restartScenario((endpoints, address) =>
        Effect.zipRight(SubscriptionRef.set(endpoints, []), SubscriptionRef.set(endpoints, [address]))
      )
      expect(result).toStrictEqual(Either.right({ msgId: 1n, seqId: 1n }))
    }), 20_000)

  it.scopedLive("a chat 100 ms after the new instance is announced succeeds (the old entry still listed at the same address)", () =>
    Effect.gen(function*() {
      const result = yield* restartScenario((endpoints, address) => SubscriptionRef.set(endpoints, [address, address]))
      expect(result).toStrictEqual(Either.right({ msgId: 1n, seqId: 1n }))
    }), 20_000)
})
