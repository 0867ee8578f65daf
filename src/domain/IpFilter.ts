/**
 * IP addresses and CIDR ranges, pure. Every address lives in the 128-bit IPv6 space, IPv4 at
 * ::ffff:0:0/96, so `127.0.0.1`, `::ffff:127.0.0.1` and `::ffff:7f00:1` are the same address and
 * an IPv4 range matches the IPv4-mapped form a dual-stack socket reports.
 */

const V4_MAPPED_PREFIX = 0xffffn << 32n
const V4_MAPPED_MASK = ~0xffffffffn & ((1n << 128n) - 1n)

export interface IpAddress {
  /** 4 for IPv4 and IPv4-mapped IPv6, 6 otherwise. */
  readonly family: 4 | 6
  /** The address in the 128-bit space (IPv4 mapped to ::ffff:a.b.c.d). */
  readonly value: bigint
}

export interface Cidr {
  readonly family: 4 | 6
  /** Prefix length in the 128-bit space (an IPv4 /p is 96 + p). */
  readonly prefix: number
  /** The network bits, i.e. the address shifted right by 128 - prefix. */
  readonly network: bigint
}

const parseIpv4Number = (text: string): number | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  let value = 0
  for (const part of parts) {
    // Leading zeros are refused: some parsers read them as octal.
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return undefined
    const octet = Number(part)
    if (octet > 255) return undefined
    value = value * 256 + octet
  }
  return value
}

const parseGroups = (text: string): Array<number> | undefined => {
  if (text === "") return []
  const groups: Array<number> = []
  const parts = text.split(":")
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!
    if (i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4Number(part)
      if (v4 === undefined) return undefined
      groups.push(Math.floor(v4 / 65536), v4 % 65536)
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined
      groups.push(parseInt(part, 16))
    }
  }
  return groups
}

const parseIpv6Value = (text: string): bigint | undefined => {
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  let groups: Array<number>
  if (halves.length === 2) {
    const head = parseGroups(halves[0]!)
    const tail = parseGroups(halves[1]!)
    if (head === undefined || tail === undefined) return undefined
    // An embedded IPv4 may only end the address.
    if (halves[0]!.includes(".")) return undefined
    const missing = 8 - head.length - tail.length
    if (missing < 1) return undefined
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail]
  } else {
    const all = parseGroups(text)
    if (all === undefined || all.length !== 8) return undefined
    groups = all
  }
  let value = 0n
  for (const group of groups) value = (value << 16n) | BigInt(group)
  return value
}

const stripDecoration = (input: string): string => {
  let text = input.trim()
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1)
  const zone = text.indexOf("%")
  return zone === -1 ? text : text.slice(0, zone)
}

/** Parses a bare IPv4 or IPv6 address (brackets and a zone id are tolerated). */
export const parseIp = (input: string): IpAddress | undefined => {
  const text = stripDecoration(input)
  if (text.includes(":")) {
    const value = parseIpv6Value(text)
    if (value === undefined) return undefined
    return { family: (value & V4_MAPPED_MASK) === V4_MAPPED_PREFIX ? 4 : 6, value }
  }
  const v4 = parseIpv4Number(text)
  return v4 === undefined ? undefined : { family: 4, value: V4_MAPPED_PREFIX | BigInt(v4) }
}

const formatIpv6 = (value: bigint): string => {
  const groups: Array<number> = []
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn))
  // RFC 5952: compress the longest run (of two or more) of zero groups, the first one on a tie.
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  const hex = groups.map((group) => group.toString(16))
  if (bestStart === -1) return hex.join(":")
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`
}

/** The canonical text of an address: dotted quad for IPv4 (mapped or not), RFC 5952 for IPv6. */
export const formatIp = (address: IpAddress): string => {
  if (address.family === 4) {
    const v4 = Number(address.value & 0xffffffffn)
    return `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`
  }
  return formatIpv6(address.value)
}

/** The canonical text of an address, or undefined when it is not one. */
export const normalizeIp = (input: string): string | undefined => {
  const address = parseIp(input)
  return address === undefined ? undefined : formatIp(address)
}

/** Parses `address/prefix` or a bare address (a /32 or /128); host bits beyond the prefix are ignored. */
export const parseCidr = (input: string): Cidr | undefined => {
  const text = input.trim()
  const slash = text.indexOf("/")
  const address = parseIp(slash === -1 ? text : text.slice(0, slash))
  if (address === undefined) return undefined
  const isV4Text = !stripDecoration(slash === -1 ? text : text.slice(0, slash)).includes(":")
  let prefix: number
  if (slash === -1) {
    prefix = 128
  } else {
    const prefixText = text.slice(slash + 1)
    if (!/^\d{1,3}$/.test(prefixText)) return undefined
    const written = Number(prefixText)
    if (written > (isV4Text ? 32 : 128)) return undefined
    prefix = isV4Text ? 96 + written : written
  }
  const family = address.family === 4 && prefix >= 96 ? 4 : 6
  return { family, prefix, network: address.value >> BigInt(128 - prefix) }
}

export const cidrContains = (cidr: Cidr, address: IpAddress): boolean =>
  address.value >> BigInt(128 - cidr.prefix) === cidr.network

/** The entries of a list that are not valid addresses or CIDR ranges. */
export const invalidCidrs = (list: ReadonlyArray<string>): ReadonlyArray<string> =>
  list.filter((entry) => parseCidr(entry) === undefined)

const compileList = (list: ReadonlyArray<string>): (address: IpAddress) => boolean => {
  const cidrs = list.map(parseCidr).filter((cidr): cidr is Cidr => cidr !== undefined)
  return (address) => {
    for (const cidr of cidrs) if (cidrContains(cidr, address)) return true
    return false
  }
}

/**
 * Whether an address falls in any range of the list. Invalid entries never match (check the
 * list with `invalidCidrs` when it is loaded); neither does an input that is not an address.
 */
export const compileCidrSet = (list: ReadonlyArray<string>): (ip: string) => boolean => {
  const contains = compileList(list)
  return (ip) => {
    const address = parseIp(ip)
    return address !== undefined && contains(address)
  }
}

export interface IpFilterRules {
  readonly allow: ReadonlyArray<string>
  readonly deny: ReadonlyArray<string>
}

/**
 * `true` when the address may be served: not in `deny` (deny wins), and in `allow` unless `allow`
 * is empty (then everyone not denied is allowed). An unparsable address is only allowed when
 * `allow` is empty.
 */
export const compileIpFilter = (rules: IpFilterRules): (ip: string) => boolean => {
  const denied = compileList(rules.deny)
  const allowed = compileList(rules.allow)
  const allowAll = rules.allow.length === 0
  return (ip) => {
    const address = parseIp(ip)
    if (address === undefined) return allowAll
    if (denied(address)) return false
    return allowAll || allowed(address)
  }
}
