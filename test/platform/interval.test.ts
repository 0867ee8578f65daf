import { afterEach, beforeEach, describe, expect, it, vi } from "@effect/vitest"
import { Effect, Logger } from "effect"
import { scopedInterval } from "../../src/adapters/platform/process/Interval.js"

describe("scopedInterval", () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] }))
  afterEach(() => void vi.useRealTimers())

  it.live("ticks at once, then until its scope closes; a tick that throws, the first too, is logged and the next one runs", () => {
    const logged: Array<string> = []
    const logger = Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void logged.push(String(message))))
    return Effect.gen(function*() {
      let ticks = 0
      yield* Effect.scoped(Effect.gen(function*() {
        yield* scopedInterval("test tick", 100, () => {
          ticks++
          if (ticks === 1) throw new Error("boom")
        })
        expect(ticks).toBe(1)
        vi.advanceTimersByTime(350)
        expect(ticks).toBe(4)
        // The failure is logged by a forked fiber: let it run.
        yield* Effect.sleep("10 millis")
        expect(logged).toEqual(["test tick failed"])
      }))
      vi.advanceTimersByTime(1_000)
      expect(ticks).toBe(4)
      expect(vi.getTimerCount()).toBe(0)
    }).pipe(Effect.provide(logger))
  })
})
