import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Logger, Scope } from "effect"
import type { CommittedMessage } from "../../src/application/Committed.js"
import { Committed } from "../../src/application/Committed.js"
import type { PushMessage } from "../../src/domain/Model.js"

const message = (msgId: bigint): PushMessage => ({
  msgId,
  seqId: msgId,
  sessionId: "0",
  fromUsername: "alice",
  toUsername: "",
  content: "hi",
  type: "text",
  timestamp: 0n,
  sessionMeta: undefined
})

const nextTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("Committed", () => {
  it.scoped("hands a turn's messages to the consumer in one go, in order, right after the turn", () =>
    Effect.gen(function*() {
      const committed = yield* Committed
      const seen: Array<string> = []
      yield* committed.consume((_, m) => seen.push(String(m.msgId)))
      committed.offer(["bob"], message(1n))
      // A microtask queued between two offers of a turn: one go hands both over before it runs
      // (a go per offer would put it between them; a later macrotask, before both).
      queueMicrotask(() => seen.push("between"))
      committed.offer(["bob", "carol"], message(2n))
      // Not while the turn that offered them still runs: its acks go first.
      expect(seen).toEqual([])
      yield* nextTurn
      committed.offer(["bob"], message(3n))
      yield* nextTurn
      expect(seen).toEqual(["1", "2", "between", "3"])
    }).pipe(Effect.provide(Committed.layer)))

  it.scoped("keeps what was offered before a consumer came, and gives it to the consumer first", () =>
    Effect.gen(function*() {
      const committed = yield* Committed
      const seen: Array<CommittedMessage> = []
      committed.offer(["bob"], message(1n))
      yield* nextTurn
      yield* committed.consume((recipients, m) => seen.push({ recipients, message: m }))
      committed.offer(["carol"], message(2n))
      yield* nextTurn
      expect(seen.map((entry) => [entry.recipients, entry.message.msgId])).toEqual([[["bob"], 1n], [["carol"], 2n]])
    }).pipe(Effect.provide(Committed.layer)))

  it.scoped("a consumer that throws is reported once for its go, and the rest of the go still goes out", () => {
    const logged: Array<string> = []
    const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => logged.push(String(message))))
    return Effect.gen(function*() {
      const committed = yield* Committed
      const seen: Array<bigint> = []
      yield* committed.consume((_, m) => {
        if (m.msgId !== 2n) seen.push(m.msgId)
        else throw new Error("a bug in the pusher")
      })
      for (const id of [1n, 2n, 3n]) committed.offer(["bob"], message(id))
      yield* nextTurn
      expect(seen).toEqual([1n, 3n])
      expect(logged.filter((text) => text.includes("pushing committed messages failed"))).toHaveLength(1)
    }).pipe(Effect.provide(Committed.layer.pipe(Layer.provide(logger))))
  })

  it.effect("a consumer whose scope closes gets what is still pending first; nothing is taken after the queue ends", () =>
    Effect.gen(function*() {
      const outer = yield* Scope.make()
      const committed = Context.get(yield* Layer.buildWithScope(Committed.layer, outer), Committed)
      const consumer = yield* Scope.make()
      const seen: Array<bigint> = []
      yield* Scope.extend(committed.consume((_, m) => seen.push(m.msgId)), consumer)
      committed.offer(["bob"], message(1n))
      yield* Scope.close(consumer, Exit.void)
      expect(seen).toEqual([1n])
      committed.offer(["bob"], message(2n))
      yield* Scope.close(outer, Exit.void)
      committed.offer(["bob"], message(3n))
      yield* nextTurn
      expect(seen).toEqual([1n])
    }))
})
