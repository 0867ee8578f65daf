import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { compileIpSet } from "../../src/adapters/platform/net/IpRules.js"
import { ConnectError, formatOf, parseJsonObject, timeoutOf } from "../../src/adapters/http/Connect.js"
import { clientIp, makeClientAddressing } from "../../src/adapters/platform/net/ClientAddress.js"
import { clientKeyOf, makeKeyedRateLimiter } from "../../src/domain/RateLimit.js"

describe("clientKeyOf", () => {
  it("keys IPv4 by address and IPv6 by its /64, whatever the interface id", () => {
    expect(clientKeyOf("203.0.113.7")).toBe("203.0.113.7")
    expect(clientKeyOf("2001:db8:1:2:aaaa:bbbb:cccc:dddd")).toBe("2001:db8:1:2::/64")
    expect(clientKeyOf("2001:db8:1:2::1")).toBe("2001:db8:1:2::/64")
    expect(clientKeyOf("2001:db8::1")).toBe("2001:db8:0:0::/64")
    expect(clientKeyOf("::1")).toBe("0:0:0:0::/64")
    expect(clientKeyOf("fe80::1:2:3:4")).toBe("fe80:0:0:0::/64")
    expect(clientKeyOf("2001:db8:1:2:3::")).toBe("2001:db8:1:2::/64")
  })
})

describe("KeyedRateLimiter", () => {
  it("allows the burst, then tells how long to wait, then refills", () => {
    const limiter = makeKeyedRateLimiter({ ratePerSecond: 0.5, burst: 2 })
    expect(limiter.take("ip", 0)).toBe(0)
    expect(limiter.take("ip", 0)).toBe(0)
    expect(limiter.take("ip", 0)).toBe(2)
    expect(limiter.take("ip", 1_000)).toBe(1)
    expect(limiter.take("ip", 2_000)).toBe(0)
    expect(limiter.take("other", 2_000)).toBe(0)
  })

  it("evicts buckets idle long enough to be full again", () => {
    const limiter = makeKeyedRateLimiter({ ratePerSecond: 1, burst: 5 })
    for (let i = 0; i < 1_000; i++) limiter.take(`ip-${i}`, 0)
    expect(limiter.size()).toBe(1_000)
    limiter.take("busy", 4_000)
    // Not yet full again (5 s to refill 5 tokens): kept.
    expect(limiter.size()).toBe(1_001)
    limiter.take("busy", 6_000)
    expect(limiter.size()).toBe(1)
  })

  it("an evicted key starts over with a full bucket, as if it had been kept", () => {
    const limiter = makeKeyedRateLimiter({ ratePerSecond: 1, burst: 1 })
    expect(limiter.take("a", 0)).toBe(0)
    expect(limiter.take("a", 0)).toBe(1)
    expect(limiter.take("b", 10_000)).toBe(0)
    expect(limiter.size()).toBe(1)
    expect(limiter.take("a", 10_000)).toBe(0)
  })

  it("never tracks more than maxKeys, dropping the least recently used", () => {
    const limiter = makeKeyedRateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 3 })
    limiter.take("a", 0)
    limiter.take("b", 0)
    limiter.take("c", 0)
    expect(limiter.take("a", 0)).toBe(1)
    limiter.take("d", 0)
    expect(limiter.size()).toBe(3)
    // "b" was the least recently used and is gone, "a" is still limited.
    expect(limiter.take("a", 0)).toBe(1)
    expect(limiter.take("b", 0)).toBe(0)
  })
})

describe("clientIp", () => {
  const trusted = Either.getOrThrow(compileIpSet("security.trusted_proxies", ["10.0.0.0/8", "::1"]))

  it("is the peer when the peer is not a trusted proxy, whatever X-Forwarded-For says", () => {
    expect(clientIp("198.51.100.9", "1.2.3.4", trusted)).toBe("198.51.100.9")
    expect(clientIp("::ffff:198.51.100.9", undefined, trusted)).toBe("198.51.100.9")
    expect(clientIp(undefined, "1.2.3.4", trusted)).toBe("")
  })

  it("walks X-Forwarded-For from the right past trusted hops, ports and brackets stripped", () => {
    expect(clientIp("10.0.0.1", "203.0.113.5", trusted)).toBe("203.0.113.5")
    expect(clientIp("::ffff:10.0.0.1", "6.6.6.6, 203.0.113.5:4711, 10.2.2.2", trusted)).toBe("203.0.113.5")
    expect(clientIp("::1", "[2001:db8::7]:443", trusted)).toBe("2001:db8::7")
    expect(clientIp("10.0.0.1", ["6.6.6.6", "203.0.113.5"], trusted)).toBe("203.0.113.5")
  })

  it("falls back to the last trusted hop when every hop is trusted or a hop is garbage", () => {
    expect(clientIp("10.0.0.1", "10.0.0.3, 10.0.0.2", trusted)).toBe("10.0.0.3")
    expect(clientIp("10.0.0.1", "203.0.113.5, not-an-ip", trusted)).toBe("10.0.0.1")
    expect(clientIp("10.0.0.1", " , ", trusted)).toBe("10.0.0.1")
  })

  it("makeClientAddressing refuses a bad list, naming its key", () => {
    const result = makeClientAddressing({ ipAllow: ["10.0.0.0/8"], ipDeny: ["not-a-cidr"], trustedProxies: [] })
    expect(Either.isLeft(result) && result.left.message).toBe("security.ip_deny: not an address or CIDR range: not-a-cidr")
  })

  it("makeClientAddressing compiles both checks for the WebSocket adapter", () => {
    const { clientIp: ipOf, ipAllowed } = Either.getOrThrow(makeClientAddressing({
      ipAllow: [],
      ipDeny: ["203.0.113.0/24"],
      trustedProxies: ["127.0.0.1"]
    }))
    const request = (remoteAddress: string, xff?: string) =>
      ({ socket: { remoteAddress }, headers: xff === undefined ? {} : { "x-forwarded-for": xff } }) as any
    expect(ipOf(request("::ffff:127.0.0.1", "203.0.113.5"))).toBe("203.0.113.5")
    expect(ipOf(request("192.0.2.1", "203.0.113.5"))).toBe("192.0.2.1")
    expect(ipAllowed("203.0.113.5")).toBe(false)
    expect(ipAllowed("192.0.2.1")).toBe(true)
  })
})

describe("Connect helpers", () => {
  it("formatOf reads the media type, ignoring parameters and case", () => {
    expect(formatOf("application/json")).toBe("json")
    expect(formatOf("Application/JSON; charset=utf-8")).toBe("json")
    expect(formatOf("application/proto")).toBe("proto")
    expect(formatOf("application/connect+json")).toBeUndefined()
    expect(formatOf(undefined)).toBeUndefined()
  })

  it("parseJsonObject: the empty body is {}, invalid UTF-8 and non-objects are refused", () => {
    const bytes = (text: string) => new TextEncoder().encode(text)
    expect(parseJsonObject(bytes(""))).toEqual({})
    expect(parseJsonObject(bytes("{\"members\":[\"a\",\"b\"],\"limit\":5}"))).toEqual({ members: ["a", "b"], limit: 5 })
    expect(parseJsonObject(new Uint8Array([0x7b, 0xff, 0x7d]))).toBeInstanceOf(ConnectError)
    expect(parseJsonObject(bytes("null"))).toBeInstanceOf(ConnectError)
    expect(parseJsonObject(bytes("{\"members\":[[1]]}"))).toBeInstanceOf(ConnectError)
  })

  it("timeoutOf accepts up to 10 digits of milliseconds", () => {
    expect(timeoutOf("250")).toBe(250)
    expect(timeoutOf("12345678901")).toBeUndefined()
    expect(timeoutOf("-1")).toBeUndefined()
    expect(timeoutOf(undefined)).toBeUndefined()
  })
})
