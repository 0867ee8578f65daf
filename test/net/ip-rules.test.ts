import { describe, expect, it } from "vitest"
import { Either } from "effect"
import { compileIpFilter as compileFilter, compileIpSet, IpRuleError, normalizeIp } from "../../src/adapters/platform/net/IpRules.js"

const compileCidrSet = (list: ReadonlyArray<string>) => Either.getOrThrow(compileIpSet("test.list", list))
const compileIpFilter = (rules: { allow: ReadonlyArray<string>; deny: ReadonlyArray<string> }) =>
  Either.getOrThrow(compileFilter({ allow: "test.allow", deny: "test.deny" }, rules))
const invalidEntries = (list: ReadonlyArray<string>) =>
  Either.match(compileIpSet("security.ip_allow", list), { onLeft: (error) => error.entries, onRight: () => [] })

describe("normalizeIp", () => {
  it("reads IPv4 dotted quads and refuses malformed ones", () => {
    expect(normalizeIp("192.168.1.20")).toBe("192.168.1.20")
    expect(normalizeIp(" 0.0.0.0 ")).toBe("0.0.0.0")
    expect(normalizeIp("255.255.255.255")).toBe("255.255.255.255")
    for (const bad of ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.-4", "a.b.c.d", "", "1..2.3"]) {
      expect(normalizeIp(bad), bad).toBeUndefined()
    }
  })

  it("reads IPv6 in full, compressed and bracketed forms with a zone id, printing RFC 5952", () => {
    expect(normalizeIp("2001:0db8:0000:0000:0000:0000:0000:0001")).toBe("2001:db8::1")
    expect(normalizeIp("::1")).toBe("::1")
    expect(normalizeIp("::")).toBe("::")
    expect(normalizeIp("[fe80::1%eth0]")).toBe("fe80::1")
    expect(normalizeIp("1:0:0:2:0:0:0:3")).toBe("1:0:0:2::3")
    expect(normalizeIp("2001:DB8:0:1:1:1:1:1")).toBe("2001:db8:0:1:1:1:1:1")
    for (const bad of ["1::2::3", "12345::1", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2:3:4:5:6:7:8", ":1:2", "g::1", "1.2.3.4::"]) {
      expect(normalizeIp(bad), bad).toBeUndefined()
    }
  })

  it("treats IPv4-mapped IPv6 as the IPv4 address, in both notations", () => {
    expect(normalizeIp("::ffff:127.0.0.1")).toBe("127.0.0.1")
    expect(normalizeIp("::FFFF:7f00:1")).toBe("127.0.0.1")
    expect(normalizeIp("::ffff:10.1.2.3")).toBe("10.1.2.3")
    // The deprecated IPv4-compatible form is a different IPv6 address.
    expect(normalizeIp("::10.1.2.3")).not.toBe("10.1.2.3")
  })
})

describe("compileIpSet entries", () => {
  it("reads bare addresses as /32 and /128", () => {
    expect(compileCidrSet(["10.0.0.1"])("10.0.0.1")).toBe(true)
    expect(compileCidrSet(["10.0.0.1"])("10.0.0.2")).toBe(false)
    expect(compileCidrSet(["2001:db8::1"])("2001:db8::1")).toBe(true)
    expect(compileCidrSet(["2001:db8::1"])("2001:db8::2")).toBe(false)
  })

  it("refuses prefixes beyond the family's width and junk", () => {
    for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "nope/8"]) {
      expect(invalidEntries([bad]), bad).toEqual([bad])
    }
    expect(invalidEntries(["10.0.0.0/8", "bad", "::1/128", "1.2.3.4/40"])).toEqual(["bad", "1.2.3.4/40"])
  })

  it("names the configuration key and every bad entry in the error", () => {
    const result = compileIpSet("security.ip_allow", ["10.0.0.0/8", "bad", "1.2.3.4/40"])
    expect(Either.isLeft(result)).toBe(true)
    const error = Either.getLeft(result).pipe((option) => option._tag === "Some" ? option.value : undefined)!
    expect(error).toBeInstanceOf(IpRuleError)
    expect(error.message).toBe("security.ip_allow: not an address or CIDR range: bad, 1.2.3.4/40")
  })
})

describe("compileCidrSet", () => {
  it("matches IPv4 ranges at their edges", () => {
    const inRange = compileCidrSet(["192.168.0.0/16"])
    expect(inRange("192.168.0.0")).toBe(true)
    expect(inRange("192.168.255.255")).toBe(true)
    expect(inRange("192.167.255.255")).toBe(false)
    expect(inRange("192.169.0.0")).toBe(false)
    // Host bits in the written network are ignored.
    expect(compileCidrSet(["10.1.2.3/8"])("10.200.0.1")).toBe(true)
    expect(compileCidrSet(["10.0.0.0/31"])("10.0.0.1")).toBe(true)
    expect(compileCidrSet(["10.0.0.0/31"])("10.0.0.2")).toBe(false)
  })

  it("/0 covers its whole family; IPv4 /0 does not reach native IPv6", () => {
    const allV4 = compileCidrSet(["0.0.0.0/0"])
    expect(allV4("1.2.3.4")).toBe(true)
    expect(allV4("255.255.255.255")).toBe(true)
    expect(allV4("::ffff:8.8.8.8")).toBe(true)
    expect(allV4("2001:db8::1")).toBe(false)
    const all = compileCidrSet(["::/0"])
    expect(all("2001:db8::1")).toBe(true)
    expect(all("8.8.8.8")).toBe(true)
  })

  it("/32 and /128 are exact", () => {
    expect(compileCidrSet(["127.0.0.1/32"])("127.0.0.1")).toBe(true)
    expect(compileCidrSet(["127.0.0.1/32"])("127.0.0.2")).toBe(false)
    expect(compileCidrSet(["::1/128"])("::1")).toBe(true)
    expect(compileCidrSet(["::1/128"])("::2")).toBe(false)
    expect(compileCidrSet(["::1/128"])("127.0.0.1")).toBe(false)
  })

  it("matches IPv6 ranges at their edges", () => {
    const docs = compileCidrSet(["2001:db8::/32"])
    expect(docs("2001:db8::")).toBe(true)
    expect(docs("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true)
    expect(docs("2001:db9::")).toBe(false)
    expect(docs("2001:db7:ffff::1")).toBe(false)
    expect(compileCidrSet(["fe80::/10"])("febf::1")).toBe(true)
    expect(compileCidrSet(["fe80::/10"])("fec0::1")).toBe(false)
  })

  it("an IPv4 range matches the mapped address a dual-stack socket reports, and the reverse", () => {
    expect(compileCidrSet(["127.0.0.0/8"])("::ffff:127.0.0.1")).toBe(true)
    expect(compileCidrSet(["::ffff:127.0.0.0/104"])("127.9.9.9")).toBe(true)
    expect(compileCidrSet(["::ffff:127.0.0.1"])("127.0.0.1")).toBe(true)
    expect(compileCidrSet(["::ffff:0:0/96"])("10.0.0.1")).toBe(true)
  })

  it("never matches input that is not an address", () => {
    expect(compileCidrSet(["0.0.0.0/0", "::/0"])("not an ip")).toBe(false)
    expect(compileCidrSet(["0.0.0.0/0", "::/0"])("")).toBe(false)
  })
})

describe("compileIpFilter", () => {
  it("allows everyone when both lists are empty", () => {
    const allowed = compileIpFilter({ allow: [], deny: [] })
    expect(allowed("1.2.3.4")).toBe(true)
    expect(allowed("::1")).toBe(true)
  })

  it("deny wins over allow", () => {
    const allowed = compileIpFilter({ allow: ["10.0.0.0/8"], deny: ["10.0.0.66"] })
    expect(allowed("10.0.0.65")).toBe(true)
    expect(allowed("10.0.0.66")).toBe(false)
    expect(allowed("::ffff:10.0.0.66")).toBe(false)
    expect(allowed("11.0.0.1")).toBe(false)
  })

  it("an empty allow list with a deny list allows all but the denied", () => {
    const allowed = compileIpFilter({ allow: [], deny: ["127.0.0.1/32", "2001:db8::/32"] })
    expect(allowed("127.0.0.1")).toBe(false)
    expect(allowed("::ffff:127.0.0.1")).toBe(false)
    expect(allowed("127.0.0.2")).toBe(true)
    expect(allowed("2001:db8::5")).toBe(false)
    expect(allowed("2001:db9::5")).toBe(true)
  })

  it("an unparsable address passes only when there is no allow list", () => {
    expect(compileIpFilter({ allow: [], deny: ["0.0.0.0/0"] })("")).toBe(true)
    expect(compileIpFilter({ allow: ["0.0.0.0/0"], deny: [] })("garbage")).toBe(false)
  })
})
