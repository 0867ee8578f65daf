import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { SignJWT } from "jose"
import { TOKEN_ISSUER } from "../../src/adapters/platform/auth/Jwt.js"
import { makeEmbeddedLogic } from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import { failure, fixture, recorder, SECRET, tempDir } from "./helpers.js"

const fixtureAt = (databasePath: string) =>
  Effect.map(
    Effect.orDie(makeEmbeddedLogic({ databasePath, bcryptRounds: 4, secretKey: SECRET }, recorder().publish)),
    (logic) => ({ logic })
  )

const key = (secret: string) => new TextEncoder().encode(secret)

const signed = (claims: { sub: string; iss: string; exp: number; alg?: string; secret?: string }) =>
  Effect.promise(() =>
    new SignJWT({})
      .setProtectedHeader({ alg: claims.alg ?? "HS256" })
      .setSubject(claims.sub)
      .setIssuer(claims.iss)
      .setIssuedAt(claims.exp - 3600)
      .setExpirationTime(claims.exp)
      .sign(key(claims.secret ?? SECRET))
  )

const inAnHour = () => Math.floor(Date.now() / 1000) + 3600

describe("LogicEmbedded auth", () => {
  it.scopedLive("register returns a token and the user, nickname defaulting to the username", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const plain = yield* logic.register({ username: "  alice ", password: "secret1", nickname: "" })
      expect(plain.user).toEqual({ username: "alice", nickname: "alice", avatarUrl: "" })
      expect(plain.accessToken.split(".")).toHaveLength(3)
      const named = yield* logic.register({ username: "bob", password: "secret1", nickname: "Bobby" })
      expect(named.user?.nickname).toBe("Bobby")
      expect((yield* logic.validateToken(named.accessToken)).username).toBe("bob")
    }))

  it.scopedLive("register refuses invalid usernames and short passwords with precise messages", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const cases = [
        { username: "   ", password: "secret1", message: "username must not be empty" },
        { username: "a".repeat(33), password: "secret1", message: "username must be at most 32 characters" },
        { username: "bad name", password: "secret1", message: "username may contain only letters, digits, '_', '.' and '-'" },
        { username: "x:y", password: "secret1", message: "username may contain only letters, digits, '_', '.' and '-'" },
        { username: "carol", password: "12345", message: "password must be at least 6 characters" },
        { username: "carol", password: "p".repeat(73), message: "password must be at most 72 bytes" }
      ]
      for (const { username, password, message } of cases) {
        const error = yield* failure(logic.register({ username, password, nickname: "" }))
        expect(error.code).toBe("invalid_argument")
        expect(error.message).toBe(message)
      }
      const ok = yield* logic.register({ username: "a.b-c_D9", password: "123456", nickname: "" })
      expect(ok.user?.username).toBe("a.b-c_D9")
    }))

  it.scopedLive("a taken username is already_exists, also when two registrations race", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      const again = yield* failure(logic.register({ username: "alice", password: "other12", nickname: "" }))
      expect(again.code).toBe("already_exists")

      const racing = yield* Effect.all(
        Array.from({ length: 4 }, () =>
          Effect.either(logic.register({ username: "dave", password: "secret1", nickname: "" }))),
        { concurrency: "unbounded" }
      )
      const wins = racing.filter((result) => result._tag === "Right")
      const losses = racing.flatMap((result) => (result._tag === "Left" ? [result.left.code] : []))
      expect(wins).toHaveLength(1)
      expect(losses).toEqual(["already_exists", "already_exists", "already_exists"])
    }))

  it.scopedLive("login accepts the right password and refuses wrong user or password alike", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "Alice" })
      const ok = yield* logic.login({ username: "alice", password: "secret1" })
      expect(ok.user).toEqual({ username: "alice", nickname: "Alice", avatarUrl: "" })
      expect((yield* logic.validateToken(ok.accessToken)).nickname).toBe("Alice")

      const wrongPassword = yield* failure(logic.login({ username: "alice", password: "secret2" }))
      const unknownUser = yield* failure(logic.login({ username: "nobody", password: "secret1" }))
      for (const error of [wrongPassword, unknownUser]) {
        expect(error.code).toBe("unauthenticated")
        expect(error.message).toBe("invalid username or password")
      }
    }))

  it.scopedLive("tokens are HS256 with sub, iss, iat and a 24 h exp by default", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ secretKey: SECRET })
      const { accessToken } = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      const [header, payload] = accessToken.split(".").slice(0, 2).map((part) =>
        JSON.parse(Buffer.from(part, "base64url").toString("utf8"))
      )
      expect(header.alg).toBe("HS256")
      expect(payload.sub).toBe("alice")
      expect(payload.iss).toBe("resonance-service")
      expect(payload.exp - payload.iat).toBe(86_400)
      expect(Math.abs(payload.iat - Date.now() / 1000)).toBeLessThan(60)
    }))

  it.scopedLive("validateToken refuses a bad signature, a wrong issuer, another algorithm and garbage", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ secretKey: SECRET })
      yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      const good = yield* signed({ sub: "alice", iss: TOKEN_ISSUER, exp: inAnHour() })
      expect((yield* logic.validateToken(good)).username).toBe("alice")

      const tokens = [
        yield* signed({ sub: "alice", iss: TOKEN_ISSUER, exp: inAnHour(), secret: "another-secret-of-sufficient-length!!" }),
        yield* signed({ sub: "alice", iss: "someone-else", exp: inAnHour() }),
        yield* signed({ sub: "alice", iss: TOKEN_ISSUER, exp: inAnHour(), alg: "HS512" }),
        good.slice(0, -2) + (good.endsWith("AA") ? "BB" : "AA"),
        "not-a-token",
        ""
      ]
      for (const token of tokens) {
        const error = yield* failure(logic.validateToken(token))
        expect(error.code).toBe("unauthenticated")
        expect(error.message).toBe("invalid access token")
      }
    }))

  it.scopedLive("validateToken refuses an expired token and one for a user that does not exist", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ secretKey: SECRET })
      yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      const expired = yield* signed({ sub: "alice", iss: TOKEN_ISSUER, exp: Math.floor(Date.now() / 1000) - 10 })
      expect(yield* failure(logic.validateToken(expired))).toMatchObject({
        code: "unauthenticated",
        message: "access token expired"
      })
      const ghost = yield* signed({ sub: "ghost", iss: TOKEN_ISSUER, exp: inAnHour() })
      expect(yield* failure(logic.validateToken(ghost))).toMatchObject({ code: "unauthenticated" })
    }))

  it.scoped("a token expires after tokenTtlSeconds on the Effect clock", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2025-06-01T00:00:00Z"))
      // In memory: a file's WAL checkpoints tick every 20 ms on this clock, ~3,000 of them a simulated minute.
      const { logic } = yield* fixture({ tokenTtlSeconds: 60, databasePath: ":memory:" })
      const { accessToken } = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      yield* TestClock.adjust("59 seconds")
      expect((yield* logic.validateToken(accessToken)).username).toBe("alice")
      yield* TestClock.adjust("2 seconds")
      const error = yield* failure(logic.validateToken(accessToken))
      expect(error).toMatchObject({ code: "unauthenticated", message: "access token expired" })
    }))
})

describe("LogicEmbedded logout (revocations)", () => {
  const jtiOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()).jti as unknown

  it.scopedLive("every token carries its own jti", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const registered = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      const loggedIn = yield* logic.login({ username: "alice", password: "secret1" })
      expect(jtiOf(registered.accessToken)).toEqual(expect.any(String))
      expect(jtiOf(loggedIn.accessToken)).not.toBe(jtiOf(registered.accessToken))
    }))

  it.scopedLive("a revoked token fails validation, shows in the log, and other tokens of the user still work", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const phone = (yield* logic.register({ username: "alice", password: "secret1", nickname: "" })).accessToken
      const laptop = (yield* logic.login({ username: "alice", password: "secret1" })).accessToken
      const revocation = yield* logic.revokeToken(phone)
      expect(revocation).toMatchObject({ tokenId: jtiOf(phone), username: "alice" })
      expect((yield* failure(logic.validateToken(phone))).message).toBe("access token was revoked")
      expect((yield* logic.validateToken(laptop)).username).toBe("alice")
      const page = yield* logic.listRevocations(0n, 100)
      expect(page.revocations.map((r) => r.tokenId)).toEqual([jtiOf(phone)])
      expect(page.nextCursor).toBe(revocation.cursor)
      expect((yield* logic.listRevocations(page.nextCursor, 100)).revocations).toEqual([])
      // A second Logout with the same token is refused: the token is no longer valid.
      expect((yield* failure(logic.revokeToken(phone))).code).toBe("unauthenticated")
    }))

  it.scopedLive("a forged token cannot be revoked, nor flood the log", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const forged = yield* signed({ sub: "alice", iss: "resonance-service", exp: inAnHour(), secret: "another-secret-entirely-0123456789" })
      expect((yield* failure(logic.revokeToken(forged))).code).toBe("unauthenticated")
      expect((yield* logic.listRevocations(0n, 100)).revocations).toEqual([])
    }))

  it.scopedLive("revocations survive a restart on the same database file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const databasePath = `${dir}/logic.db`
      const token = yield* Effect.scoped(
        Effect.gen(function*() {
          const { logic } = yield* fixtureAt(databasePath)
          const { accessToken } = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
          yield* logic.revokeToken(accessToken)
          return accessToken
        })
      )
      const { logic } = yield* fixtureAt(databasePath)
      expect((yield* failure(logic.validateToken(token))).message).toBe("access token was revoked")
      expect((yield* logic.listRevocations(0n, 10)).revocations).toHaveLength(1)
    }))

  it.scoped("expired revocations leave the log", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-01-01T00:00:00Z"))
      const { logic } = yield* fixture({ tokenTtlSeconds: 60, databasePath: ":memory:" })
      const { accessToken } = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      yield* logic.revokeToken(accessToken)
      expect((yield* logic.listRevocations(0n, 10)).revocations).toHaveLength(1)
      yield* TestClock.adjust("61 seconds")
      expect((yield* logic.listRevocations(0n, 10)).revocations).toEqual([])
    }))
})
