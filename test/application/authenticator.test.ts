import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, TestClock } from "effect"
import { Authenticator } from "../../src/application/Authenticator.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { logicError } from "../../src/domain/Errors.js"

const b64url = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")
const jwt = (claims: object) => `${b64url({ alg: "HS256" })}.${b64url(claims)}.sig`

const harness = (validate: (token: string) => Effect.Effect<{ username: string }, ReturnType<typeof logicError>>) => {
  let calls = 0
  const layer = Authenticator.layer({ cacheTtl: "30 seconds" }).pipe(
    Layer.provide(
      Logic.layerTest({
        validateToken: (token) =>
          Effect.suspend(() => {
            calls++
            return validate(token).pipe(Effect.map((u) => ({ username: u.username, nickname: u.username, avatarUrl: "" })))
          })
      })
    )
  )
  return { layer, calls: () => calls }
}

describe("Authenticator", () => {
  it.effect("resolves a token to its user and expiry", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const principal = yield* auth.authenticate(jwt({ sub: "alice", exp: 3600 }))
      expect(principal).toEqual({ username: "alice", expiresAt: 3_600_000 })
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("refuses a missing token without asking Logic", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const error = yield* Effect.flip(auth.authenticate(undefined))
      expect(error.reason).toBe("Missing")
      expect(h.calls()).toBe(0)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("refuses an expired token as Expired", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      yield* TestClock.adjust("2 hours")
      const error = yield* Effect.flip(auth.authenticate(jwt({ sub: "alice", exp: 3600 })))
      expect(error.reason).toBe("Expired")
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("caches valid answers for the ttl only", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice" })
      yield* auth.authenticate(token)
      yield* auth.authenticate(token)
      expect(h.calls()).toBe(1)
      yield* TestClock.adjust("31 seconds")
      yield* auth.authenticate(token)
      expect(h.calls()).toBe(2)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("with a zero ttl every authentication asks Logic", () => {
    let calls = 0
    const layer = Authenticator.layer({ cacheTtl: 0 }).pipe(
      Layer.provide(
        Logic.layerTest({
          validateToken: () => Effect.sync(() => (calls++, { username: "alice", nickname: "", avatarUrl: "" }))
        })
      )
    )
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice" })
      yield* auth.authenticate(token)
      yield* auth.authenticate(token)
      expect(calls).toBe(2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("does not cache an outage and reports it as Unavailable", () => {
    let down = true
    const h = harness(() =>
      down ? Effect.fail(logicError("unavailable", "logic down")) : Effect.succeed({ username: "alice" })
    )
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice" })
      const error = yield* Effect.flip(auth.authenticate(token))
      expect(error.reason).toBe("Unavailable")
      down = false
      expect((yield* auth.authenticate(token)).username).toBe("alice")
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("maps a refusal to Invalid", () => {
    const h = harness(() => Effect.fail(logicError("unauthenticated", "bad signature")))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const error = yield* Effect.flip(auth.authenticate("garbage"))
      expect(error).toMatchObject({ reason: "Invalid", message: "bad signature" })
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("a revoked token is refused even while cached", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice", exp: 3600 })
      yield* auth.authenticate(token)
      yield* auth.revoke(token)
      const error = yield* Effect.flip(auth.authenticate(token))
      expect(error.reason).toBe("Invalid")
    }).pipe(Effect.provide(h.layer))
  })
})
