import { describe, expect, it } from "@effect/vitest"
import { newBucket, tryTake } from "../../src/domain/RateLimit.js"
import { readClaims, tokenFromAuthorization, tokenIdOf } from "../../src/domain/Token.js"

const b64url = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")
const jwt = (claims: object) => `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.sig`

describe("readClaims", () => {
  it("reads sub and exp (as milliseconds)", () => {
    expect(readClaims(jwt({ sub: "alice", exp: 1700000000 }))).toEqual({ sub: "alice", expiresAt: 1700000000000, jti: undefined })
  })

  it("returns undefined for anything that is not a JWT", () => {
    expect(readClaims("not-a-token")).toBeUndefined()
    expect(readClaims("a.%%%.c")).toBeUndefined()
    expect(readClaims(`x.${Buffer.from("[1]").toString("base64url")}.y`)?.sub).toBeUndefined()
  })

  it("tolerates tokens without exp", () => {
    expect(readClaims(jwt({ sub: "bob" }))).toEqual({ sub: "bob", expiresAt: undefined, jti: undefined })
  })
})

describe("tokenIdOf", () => {
  it("is the jti when the token has one, else the whole token", () => {
    const withJti = jwt({ sub: "alice", jti: "7f1c" })
    expect(tokenIdOf(withJti)).toBe("7f1c")
    const without = jwt({ sub: "alice" })
    expect(tokenIdOf(without)).toBe(without)
    expect(tokenIdOf(jwt({ sub: "alice", jti: "" }))).not.toBe("")
    expect(tokenIdOf("opaque-token")).toBe("opaque-token")
  })
})

describe("tokenFromAuthorization", () => {
  it("takes Bearer in any case and, like the Go gateway, a bare token", () => {
    expect(tokenFromAuthorization("Bearer abc.def.ghi")).toBe("abc.def.ghi")
    expect(tokenFromAuthorization("bearer   abc ")).toBe("abc")
    expect(tokenFromAuthorization("BEARER abc")).toBe("abc")
    expect(tokenFromAuthorization("abc.def.ghi")).toBe("abc.def.ghi")
  })

  it("refuses blanks and other schemes", () => {
    expect(tokenFromAuthorization(undefined)).toBeUndefined()
    expect(tokenFromAuthorization("")).toBeUndefined()
    expect(tokenFromAuthorization("Bearer ")).toBeUndefined()
    expect(tokenFromAuthorization("Basic dXNlcjpwdw==")).toBeUndefined()
    expect(tokenFromAuthorization("Bearer a b")).toBeUndefined()
  })
})

describe("token bucket", () => {
  it("allows the burst then refuses", () => {
    const bucket = newBucket(3, 0)
    expect([1, 2, 3, 4].map(() => tryTake(bucket, 1, 3, 0))).toEqual([true, true, true, false])
  })

  it("refills with time at the given rate, capped at the burst", () => {
    const bucket = newBucket(2, 0)
    tryTake(bucket, 10, 2, 0)
    tryTake(bucket, 10, 2, 0)
    expect(tryTake(bucket, 10, 2, 50)).toBe(false)
    expect(tryTake(bucket, 10, 2, 150)).toBe(true)
    expect(tryTake(bucket, 10, 2, 100_000)).toBe(true)
    expect(tryTake(bucket, 10, 2, 100_000)).toBe(true)
    expect(tryTake(bucket, 10, 2, 100_000)).toBe(false)
  })

  it("does not gain tokens when the clock goes back", () => {
    const bucket = newBucket(1, 1000)
    expect(tryTake(bucket, 1, 1, 1000)).toBe(true)
    expect(tryTake(bucket, 1, 1, 500)).toBe(false)
  })
})
