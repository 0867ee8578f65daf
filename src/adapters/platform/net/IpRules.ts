import { Data, Either } from "effect"
import * as Net from "node:net"

/** A configured address list holds entries that are neither an address nor a CIDR range. */
export class IpRuleError extends Data.TaggedError("IpRuleError")<{
  /** The configuration key of the list, e.g. `security.ip_allow`. */
  readonly key: string
  readonly entries: ReadonlyArray<string>
}> {
  override get message(): string {
    return `${this.key}: not an address or CIDR range: ${this.entries.join(", ")}`
  }
}

const undecorated = (input: string): string => {
  let text = input.trim()
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1)
  const zone = text.indexOf("%")
  return zone === -1 ? text : text.slice(0, zone)
}

/**
 * The canonical text of an address: dotted quad for IPv4 and IPv4-mapped IPv6, RFC 5952 for IPv6
 * (brackets and a zone id are dropped); `undefined` when the input is not an address.
 */
export const normalizeIp = (input: string): string | undefined => {
  const text = undecorated(input)
  const family = Net.isIP(text)
  if (family === 4) return text
  if (family === 0) return undefined
  const canonical = new Net.SocketAddress({ address: text, family: "ipv6" }).address
  return canonical.startsWith("::ffff:") && Net.isIPv4(canonical.slice(7)) ? canonical.slice(7) : canonical
}

interface Range {
  readonly address: string
  readonly prefix: number
  readonly family: "ipv4" | "ipv6"
}

const parseRange = (entry: string): Range | undefined => {
  const slash = entry.indexOf("/")
  const address = undecorated(slash === -1 ? entry : entry.slice(0, slash))
  const family = Net.isIP(address)
  if (family === 0) return undefined
  const max = family === 4 ? 32 : 128
  if (slash === -1) return { address, prefix: max, family: family === 4 ? "ipv4" : "ipv6" }
  const prefixText = entry.slice(slash + 1).trim()
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) return undefined
  return { address, prefix: Number(prefixText), family: family === 4 ? "ipv4" : "ipv6" }
}

/** Whether an address falls in any range of a list; compiled once, checked per request. */
export type IpSet = (ip: string) => boolean

/**
 * Compiles a list of addresses and CIDR ranges onto a `net.BlockList` (which matches IPv4 rules
 * against IPv4-mapped IPv6 addresses too). Fails naming `key` and every bad entry.
 */
export const compileIpSet = (key: string, list: ReadonlyArray<string>): Either.Either<IpSet, IpRuleError> => {
  const blockList = new Net.BlockList()
  const invalid: Array<string> = []
  for (const entry of list) {
    const range = parseRange(entry)
    if (range === undefined) invalid.push(entry)
    else blockList.addSubnet(range.address, range.prefix, range.family)
  }
  if (invalid.length > 0) return Either.left(new IpRuleError({ key, entries: invalid }))
  if (list.length === 0) return Either.right(() => false)
  return Either.right((ip) => {
    const text = undecorated(ip)
    const family = Net.isIP(text)
    return family !== 0 && blockList.check(text, family === 4 ? "ipv4" : "ipv6")
  })
}

export interface IpFilterRules {
  readonly allow: ReadonlyArray<string>
  readonly deny: ReadonlyArray<string>
}

/**
 * `true` when an address may be served: not denied (deny wins), and allowed unless `allow` is
 * empty (then everyone not denied is). A peer whose address is unknown passes only an empty
 * `allow`. `keys` name the two lists in errors.
 */
export const compileIpFilter = (
  keys: { readonly allow: string; readonly deny: string },
  rules: IpFilterRules
): Either.Either<IpSet, IpRuleError> =>
  Either.flatMap(compileIpSet(keys.allow, rules.allow), (allowed) =>
    Either.map(compileIpSet(keys.deny, rules.deny), (denied): IpSet => {
      const allowAll = rules.allow.length === 0
      return (ip) => {
        if (Net.isIP(undecorated(ip)) === 0) return allowAll
        return !denied(ip) && (allowAll || allowed(ip))
      }
    }))
