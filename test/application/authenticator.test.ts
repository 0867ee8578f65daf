import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FiberId, Layer, TestClock } from "effect"
import { Authenticator } from "../../src/application/Authenticator.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { CloseCodes } from "../../src/domain/Connection.js"
import { logicError } from "../../src/domain/Errors.js"
import type { Revocation } from "../../src/domain/Model.js"
import { tokenIdOf } from "../../src/domain/Token.js"
import { fakeConnection } from "../support/helpers.js"

const b64url = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")
const jwt = (claims: object) => `${b64url({ alg: "HS256" })}.${b64url(claims)}.sig`

const harness = (
  validate: (token: string) => Effect.Effect<{ username: string }, ReturnType<typeof logicError>>,
  logic: Partial<LogicShape> = {},
  options: Parameters<typeof Authenticator.layer>[0] = {}
) => {
  let calls = 0
  const stored: Array<Revocation> = []
  const layer = Authenticator.layer({ cacheTtl: "30 seconds", ...options }).pipe(
    Layer.provideMerge(ConnectionHub.layer),
    Layer.provide(
      Logic.layerTest({
        validateToken: (token) =>
          Effect.suspend(() => {
            calls++
            return validate(token).pipe(Effect.map((u) => ({ username: u.username, nickname: u.username, avatarUrl: "" })))
          }),
        revokeToken: (token) =>
          Effect.sync(() => {
            const revocation = { cursor: BigInt(stored.length + 1), tokenId: tokenIdOf(token), username: "alice", expiresAt: 3600n }
            stored.push(revocation)
            return revocation
          }),
        ...logic
      })
    )
  )
  return { layer, calls: () => calls, stored }
}

describe("Authenticator", () => {
  it.effect("resolves a token to its user and expiry", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const principal = yield* auth.authenticate(jwt({ sub: "alice", exp: 3600 }))
      expect(principal).toEqual({ username: "alice", expiresAt: 3_600_000, tokenId: principal.tokenId })
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("asks Logic at most logicConcurrency tokens at once, queues logicQueue more, and refuses the rest at once", () => {
    const gate = Deferred.unsafeMake<void>(FiberId.none)
    const h = harness((token) => Effect.as(Deferred.await(gate), { username: token.slice(-1) }), {}, { logicConcurrency: 2, logicQueue: 1 })
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const fibers = yield* Effect.forEach(["t-a", "t-b", "t-c"], (token) => Effect.fork(auth.authenticate(token)))
      yield* Effect.yieldNow()
      // Two with Logic, one waiting: the fourth is refused without a call.
      expect(h.calls()).toBe(2)
      const refused = yield* Effect.flip(auth.authenticate("t-d"))
      expect(refused.reason).toBe("Unavailable")
      expect(h.calls()).toBe(2)
      yield* Deferred.succeed(gate, undefined)
      const principals = yield* Effect.forEach(fibers, Fiber.join)
      expect(principals.map((p) => p.username)).toEqual(["a", "b", "c"])
      expect(h.calls()).toBe(3)
      // The turns were given back: the next token is asked again.
      expect((yield* auth.authenticate("t-e")).username).toBe("e")
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
      Layer.provide(ConnectionHub.layer),
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

  it.effect("Logout stores the revocation at Logic; the token is refused even while cached", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice", exp: 3600, jti: "t-1" })
      yield* auth.authenticate(token)
      yield* auth.revoke(token)
      expect(h.stored).toHaveLength(1)
      const error = yield* Effect.flip(auth.authenticate(token))
      expect(error.reason).toBe("Revoked")
      expect(h.calls()).toBe(1)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("closes with 4001 exactly the sockets opened with the revoked token", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }), {
      revokeToken: () => Effect.succeed({ cursor: 1n, tokenId: "phone-token", username: "alice", expiresAt: 3600n })
    })
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const hub = yield* ConnectionHub
      const phone = fakeConnection("alice", { tokenId: "phone-token" })
      const laptop = fakeConnection("alice", { tokenId: "laptop-token" })
      hub.add(phone)
      hub.add(laptop)
      yield* auth.revoke(jwt({ sub: "alice", exp: 3600, jti: "phone-token" }))
      expect(phone.closes).toEqual([{ code: CloseCodes.TokenExpired, reason: "token revoked" }])
      expect(laptop.closes).toEqual([])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("with a Logic that keeps no revocations (the Go one), the token is still refused here", () => {
    const h = harness(() => Effect.succeed({ username: "alice" }), {
      revokeToken: () => Effect.fail(logicError("unimplemented", "unknown method RevokeToken"))
    })
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const token = jwt({ sub: "alice", exp: 3600 })
      yield* auth.revoke(token)
      expect((yield* Effect.flip(auth.authenticate(token))).reason).toBe("Revoked")
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("follows revocations made through another gateway: refuses the token and closes its sockets", () => {
    const log: Array<Revocation> = []
    const asked: Array<bigint> = []
    const h = harness(() => Effect.succeed({ username: "bob" }), {
      listRevocations: (after) =>
        Effect.sync(() => {
          asked.push(after)
          const page = log.filter((r) => r.cursor > after)
          return { revocations: page, nextCursor: page.length > 0 ? page[page.length - 1]!.cursor : after }
        })
    }, { revocationPoll: "500 millis" })
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const hub = yield* ConnectionHub
      const token = jwt({ sub: "bob", exp: 3600, jti: "bob-1" })
      yield* auth.authenticate(token)
      const socket = fakeConnection("bob", { tokenId: "bob-1" })
      hub.add(socket)
      log.push({ cursor: 7n, tokenId: "bob-1", username: "bob", expiresAt: 3600n })
      yield* TestClock.adjust("500 millis")
      expect(socket.closes).toEqual([{ code: CloseCodes.TokenExpired, reason: "token revoked" }])
      expect((yield* Effect.flip(auth.authenticate(token))).reason).toBe("Revoked")
      yield* TestClock.adjust("500 millis")
      expect(asked.at(-1)).toBe(7n)
    }).pipe(Effect.provide(h.layer))
  })
})
