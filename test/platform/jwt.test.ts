import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Option } from "effect"
import { SignJWT } from "jose"
import { layerVerifierConfig, makeJwt, TOKEN_ISSUER } from "../../src/adapters/platform/auth/Jwt.js"
import { Authenticator } from "../../src/application/Authenticator.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { TokenVerifier } from "../../src/application/ports/TokenVerifier.js"

const SECRET = "a-shared-secret-of-at-least-32-bytes!!"
const now = Date.parse("2026-12-07T12:00:00Z")

/** A token made by another library, as a forger (or another Logic) would. */
const forge = (claims: Record<string, unknown>, options: { readonly secret?: string; readonly alg?: string } = {}) =>
  Effect.promise(() =>
    new SignJWT(claims).setProtectedHeader({ alg: options.alg ?? "HS256" }).sign(new TextEncoder().encode(options.secret ?? SECRET)))

describe("access tokens with fast-jwt", () => {
  it.effect("signs what it checks: subject, its own jti, expiry against the caller's clock", () =>
    Effect.gen(function*() {
      const jwt = makeJwt(SECRET, 60)
      const token = jwt.sign("alice", now)
      const check = jwt.check(token, now + 59_000)
      expect(check).toMatchObject({ _tag: "Valid", username: "alice", expiresAt: now / 1000 + 60 })
      expect(check._tag === "Valid" && check.tokenId).not.toBe(token)
      expect(jwt.check(token, now + 60_000)).toEqual({ _tag: "Expired" })
      expect(jwt.check(jwt.sign("alice", now), now)._tag === "Valid" && jwt.check(jwt.sign("alice", now), now)).not.toEqual(check)
    }))

  it.effect("refuses another key, another algorithm, another issuer, no expiry, no subject, alg none", () =>
    Effect.gen(function*() {
      const jwt = makeJwt(SECRET, 60)
      const exp = now / 1000 + 600
      expect(jwt.check(yield* forge({ sub: "a", iss: TOKEN_ISSUER, exp }), now)._tag).toBe("Valid")
      expect(jwt.check(yield* forge({ sub: "a", iss: TOKEN_ISSUER, exp }, { secret: "another-secret-of-at-least-32-bytes!!" }), now)._tag)
        .toBe("Invalid")
      expect(jwt.check(yield* forge({ sub: "a", iss: TOKEN_ISSUER, exp }, { alg: "HS512" }), now)._tag).toBe("Invalid")
      expect(jwt.check(yield* forge({ sub: "a", iss: "someone-else", exp }), now)._tag).toBe("Invalid")
      expect(jwt.check(yield* forge({ sub: "a", iss: [TOKEN_ISSUER], exp }), now)._tag).toBe("Invalid")
      // A token with no issuer at all is taken, as before (its signature is still checked).
      expect(jwt.check(yield* forge({ sub: "a", exp }), now)._tag).toBe("Valid")
      expect(jwt.check(yield* forge({ sub: "a", iss: TOKEN_ISSUER }), now)._tag).toBe("Invalid")
      expect(jwt.check(yield* forge({ iss: TOKEN_ISSUER, exp }), now)._tag).toBe("Invalid")
      const unsigned = `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${
        Buffer.from(JSON.stringify({ sub: "a", iss: TOKEN_ISSUER, exp })).toString("base64url")
      }.`
      expect(jwt.check(unsigned, now)._tag).toBe("Invalid")
      expect(jwt.check("not a token", now)._tag).toBe("Invalid")
    }))

  it.effect("a cluster gateway with auth.secret_key checks tokens itself, no Logic call; without it, nothing is provided", () =>
    Effect.gen(function*() {
      const withKey = yield* Effect.provide(Effect.serviceOption(TokenVerifier), layerVerifierConfig).pipe(
        Effect.withConfigProvider(ConfigProvider.fromJson({ auth: { secret_key: SECRET } }))
      )
      expect(Option.isSome(withKey)).toBe(true)
      const without = yield* Effect.provide(Effect.serviceOption(TokenVerifier), layerVerifierConfig).pipe(
        Effect.withConfigProvider(ConfigProvider.fromJson({}))
      )
      expect(Option.isNone(without)).toBe(true)

      let asked = 0
      const authenticator = yield* Effect.provide(
        Authenticator,
        Authenticator.layer().pipe(
          Layer.provide(Layer.mergeAll(
            ConnectionHub.layer,
            Logic.layerTest({ validateToken: () => Effect.sync(() => asked++).pipe(Effect.zipRight(Effect.die("not asked"))) }),
            layerVerifierConfig.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromJson({ auth: { secret_key: SECRET } }))))
          ))
        )
      )
      const token = makeJwt(SECRET, 3600).sign("alice", Date.now())
      expect(authenticator.authenticateNow(token)).toMatchObject({ username: "alice" })
      expect((yield* authenticator.authenticate(token)).username).toBe("alice")
      expect(asked).toBe(0)
    }))
})
