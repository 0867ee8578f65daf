import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, LogLevel, TestClock } from "effect"
import * as path from "node:path"
import { withFrontDoor } from "../support/door.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import * as LogicEmbedded from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { logicError } from "../../src/domain/Errors.js"
import { chat, recorder, SECRET, tempDir } from "../logic-embedded/helpers.js"
import { connectClient, grpcLogic, promise, serverPort, testGateway } from "../support/gateway.js"

describe("retries of the Logic client", () => {
  it.effect("the schedule backs off exponentially with jitter, a bounded number of times, on the Effect clock", () =>
    Effect.gen(function*() {
      const attemptsAt: Array<number> = []
      const failing = Effect.flatMap(TestClock.currentTimeMillis, (now) => {
        attemptsAt.push(now)
        return Effect.fail("UNAVAILABLE")
      })
      const fiber = yield* Effect.fork(Effect.retry(failing, LogicGrpc.retrySchedule("100 millis", 3)))
      for (let i = 0; i < 20; i++) yield* TestClock.adjust("50 millis")
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isFailure(exit)).toBe(true)
      expect(attemptsAt).toHaveLength(4)
      const gaps = attemptsAt.slice(1).map((at, i) => at - attemptsAt[i]!)
      // 100, 200, 400 ms, each jittered into [0.8, 1.2] and seen on a 50 ms grid.
      expect(gaps[0]).toBeGreaterThanOrEqual(50)
      expect(gaps[0]).toBeLessThanOrEqual(150)
      expect(gaps[1]).toBeGreaterThanOrEqual(150)
      expect(gaps[1]).toBeLessThanOrEqual(250)
      expect(gaps[2]).toBeGreaterThanOrEqual(300)
      expect(gaps[2]).toBeLessThanOrEqual(500)
    }))
})

/** A real embedded Logic behind gRPC whose first reply to SendMessage is lost after the commit. */
const lossyLogic = (loseReply: (reply: Effect.Effect<unknown, unknown>) => Effect.Effect<never, unknown>) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const stored = recorder()
    const real = yield* LogicEmbedded.makeEmbeddedLogic(
      { databasePath: path.join(dir, "logic.db"), bcryptRounds: 4, secretKey: SECRET },
      stored.publish
    ).pipe(Effect.orDie)
    let lost = 0
    const lossy: LogicShape = {
      ...real,
      sendMessage: (message, origin) =>
        Effect.flatMap(real.sendMessage(message, origin), (result) => {
          if (lost > 0) return Effect.succeed(result)
          lost++
          return loseReply(Effect.succeed(result)) as never
        })
    }
    const { port } = yield* serveLogic(lossy, { port: 0, host: "127.0.0.1", shutdownTimeout: "1 second" }).pipe(
      Effect.provide(InternalAuth.layerTest),
      withFrontDoor
    )
    yield* real.register({ username: "alice", password: "secret1", nickname: "" })
    const token = (yield* real.login({ username: "alice", password: "secret1" })).accessToken
    return { real, port, token, lost: () => lost }
  })

const sendThroughGateway = (port: number, token: string) =>
  Effect.gen(function*() {
    const wsPort = yield* serverPort
    const client = yield* promise(() => connectClient(wsPort, { token }))
    client.send({ seq: "only-once", payload: { $case: "chat", value: chat("0", "", "stored once, whatever the wire did") } })
    const ack = yield* promise(() => client.next((p) => p.payload?.$case === "ack" && p.seq === "only-once", 10_000))
    client.ws.close()
    return ack.payload?.$case === "ack" ? ack.payload.value : undefined
  }).pipe(
    Effect.provide(
      testGateway({
        config: { logic: { timeout: "5s", attempt_timeout: "400ms", retries: 3 } },
        logicLayer: grpcLogic(`127.0.0.1:${port}`),
        logLevel: LogLevel.None
      })
    )
  )

describe("idempotent sends through the gateway", () => {
  for (const [how, loseReply] of [
    ["commits and then fails the call", () => Effect.fail(logicError("unavailable", "connection reset after commit"))],
    ["commits and then answers too late", (reply: Effect.Effect<unknown, unknown>) => Effect.zipRight(Effect.sleep("1 second"), reply)]
  ] as const) {
    it.scopedLive(`a Logic that ${how}: the retry gets the first msg_id, the message is stored once`, () =>
      Effect.gen(function*() {
        const { real, port, token, lost } = yield* lossyLogic(loseReply as never)
        const ack = yield* sendThroughGateway(port, token)
        expect(lost()).toBe(1)
        expect(ack?.error).toBe("")
        const history = yield* real.getHistoryMessages({ username: "alice", sessionId: "0", limit: 0n, beforeSeq: 0n })
        const stored = history.filter((m) => m.content === "stored once, whatever the wire did")
        expect(stored).toHaveLength(1)
        expect(ack?.msgId).toBe(stored[0]!.msgId)
        expect(ack?.seqId).toBe(stored[0]!.seqId)
      }), 30_000)
  }
})
