import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makePasswords } from "../../src/adapters/logic-embedded/Passwords.js"

describe("password hashing", () => {
  it.live("hashes and verifies bcrypt, and compares an unknown user against a decoy", () =>
    Effect.gen(function*() {
      const passwords = yield* makePasswords({ cost: 4, concurrency: 1, queue: 4 })
      const hash = yield* passwords.hash("correct horse")
      expect(hash).toMatch(/^\$2[aby]\$04\$/)
      expect(yield* passwords.verify("correct horse", hash)).toBe(true)
      expect(yield* passwords.verify("wrong horse", hash)).toBe(false)
      expect(yield* passwords.verify("correct horse", undefined)).toBe(false)
    }))

  it.live("a flood beyond the cap and its queue is refused at once with resource_exhausted", () =>
    Effect.gen(function*() {
      const passwords = yield* makePasswords({ cost: 6, concurrency: 1, queue: 1 })
      const outcomes = yield* Effect.all(
        Array.from({ length: 5 }, () => Effect.either(passwords.hash("secret1"))),
        { concurrency: "unbounded" }
      )
      const refused = outcomes.filter((o) => o._tag === "Left").map((o) => o._tag === "Left" && o.left.code)
      expect(outcomes.filter((o) => o._tag === "Right")).toHaveLength(2)
      expect(refused).toEqual(["resource_exhausted", "resource_exhausted", "resource_exhausted"])
      // Once the queue drained, hashing is admitted again.
      expect((yield* Effect.either(passwords.hash("secret1")))._tag).toBe("Right")
    }))
})
