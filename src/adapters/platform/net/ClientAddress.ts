import { Config, Effect, Either } from "effect"
import type { ConfigError } from "effect"
import type * as Http from "node:http"
import { list } from "../config/Settings.js"
import type { IpRuleError, IpSet } from "./IpRules.js"
import { compileIpFilter, compileIpSet, normalizeIp } from "./IpRules.js"

/** Strips a port from an X-Forwarded-For hop (`1.2.3.4:5678`, `[::1]:80`). */
const hopAddress = (hop: string): string => {
  if (hop.startsWith("[")) {
    const end = hop.indexOf("]")
    return end === -1 ? hop : hop.slice(1, end)
  }
  const colon = hop.indexOf(":")
  return colon !== -1 && colon === hop.lastIndexOf(":") ? hop.slice(0, colon) : hop
}

/**
 * The client's address: the peer itself, unless the peer is a trusted proxy; then the right-most
 * X-Forwarded-For hop that is not a trusted proxy (hops further left are client-supplied and
 * could be forged). Addresses come back normalized (`::ffff:1.2.3.4` → `1.2.3.4`); "" when unknown.
 */
export const clientIp = (
  remoteAddress: string | undefined,
  xForwardedFor: string | ReadonlyArray<string> | undefined,
  isTrustedProxy: (ip: string) => boolean
): string => {
  if (remoteAddress === undefined || remoteAddress === "") return ""
  let current = normalizeIp(remoteAddress) ?? remoteAddress
  if (xForwardedFor === undefined || !isTrustedProxy(current)) return current
  const hops = (typeof xForwardedFor === "string" ? xForwardedFor : xForwardedFor.join(",")).split(",")
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim()
    if (hop === "") continue
    const address = normalizeIp(hopAddress(hop))
    // A trusted proxy wrote garbage: keep the last address we know to be real.
    if (address === undefined) return current
    if (!isTrustedProxy(address)) return address
    current = address
  }
  return current
}

export interface ClientAddressOptions {
  readonly ipAllow: ReadonlyArray<string>
  readonly ipDeny: ReadonlyArray<string>
  readonly trustedProxies: ReadonlyArray<string>
}

export interface ClientAddressing {
  /** The proxy-aware, normalized client address of a Node request (HTTP or upgrade). */
  readonly clientIp: (request: Http.IncomingMessage) => string
  /** Whether that address may be served at all (the allow/deny lists). */
  readonly ipAllowed: IpSet
  /**
   * Why the address of a request may stand for many clients (a proxy the gateway does not trust, a
   * NAT or load balancer on a private network); `undefined` when it looks like one client.
   * `clientIp` is what `clientIp(request)` gave.
   */
  readonly sharedAddressHint: (request: Http.IncomingMessage, clientIp: string) => string | undefined
  /** Whether a peer is a proxy listed in `security.trusted_proxies` (its clients share its address). */
  readonly isTrustedProxy: IpSet
}

/** Loopback, RFC 1918, CGNAT, link-local and unique-local ranges: where proxies and NATs live. */
const isPrivateAddress: IpSet = Either.getOrThrow(
  compileIpSet("private ranges", [
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    "::1", "fc00::/7", "fe80::/10"
  ])
)

const sharedAddressHint = (
  request: Http.IncomingMessage,
  ip: string,
  isTrustedProxy: (ip: string) => boolean
): string | undefined => {
  const peer = normalizeIp(request.socket.remoteAddress ?? "") ?? ""
  if (request.headers["x-forwarded-for"] !== undefined && !isTrustedProxy(peer)) {
    return `${peer} sends X-Forwarded-For but is not in security.trusted_proxies, so every client behind it shares one budget`
  }
  if (ip === peer && isPrivateAddress(ip)) {
    return `${ip} is a private address: if a proxy or NAT stands in front of the gateway, list it in security.trusted_proxies`
  }
  return undefined
}

/** Addressing for tests and defaults: the socket's peer, everyone allowed. */
export const directAddressing: ClientAddressing = {
  clientIp: (request) => clientIp(request.socket.remoteAddress, undefined, () => false),
  ipAllowed: () => true,
  sharedAddressHint: () => undefined,
  isTrustedProxy: () => false
}

/**
 * The two plain checks every public entry point runs, compiled once from `security.*`; fails
 * naming the configuration key of a list with a bad entry.
 */
export const makeClientAddressing = (options: ClientAddressOptions): Either.Either<ClientAddressing, IpRuleError> =>
  Either.flatMap(compileIpSet("security.trusted_proxies", options.trustedProxies), (isTrustedProxy) =>
    Either.map(
      compileIpFilter({ allow: "security.ip_allow", deny: "security.ip_deny" }, {
        allow: options.ipAllow,
        deny: options.ipDeny
      }),
      (ipAllowed): ClientAddressing => {
        const hasProxies = options.trustedProxies.length > 0
        const ipOf = (request: Http.IncomingMessage) =>
          clientIp(
            request.socket.remoteAddress,
            hasProxies ? request.headers["x-forwarded-for"] : undefined,
            isTrustedProxy
          )
        return {
          clientIp: ipOf,
          ipAllowed,
          sharedAddressHint: (request, ip) => sharedAddressHint(request, ip, isTrustedProxy),
          isTrustedProxy
        }
      }
    ))

/** `security.ip_allow`, `.ip_deny`, `.trusted_proxies` as written; compiled by `clientAddressingConfig`. */
export const clientAddressSettings: Config.Config<ClientAddressOptions> = Config.nested(
  Config.all({ ipAllow: list("ip_allow"), ipDeny: list("ip_deny"), trustedProxies: list("trusted_proxies") }),
  "security"
)

/** The addressing of the public entry points from the configuration; a bad entry fails naming its key. */
export const clientAddressingConfig: Effect.Effect<ClientAddressing, ConfigError.ConfigError | IpRuleError> =
  Effect.flatMap(clientAddressSettings, makeClientAddressing)
