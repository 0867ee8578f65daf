import { Clock, Effect } from "effect"
import type * as Http from "node:http"
import { clientKeyOf, makeKeyedRateLimiter } from "../../domain/RateLimit.js"
import type { ClientAddressing } from "../platform/net/ClientAddress.js"
import type { ConnectError } from "./Connect.js"
import { tooMany } from "./Connect.js"

export interface RateLimits {
  /** Login and Register calls per client IP (each procedure its own bucket); 0 = unlimited. */
  readonly authPerIpPerMinute: number
  /** SessionService calls per user, all methods together; 0 = unlimited. */
  readonly sessionPerUserPerSecond: number
  /** Logins and registrations in flight at once from one address; 0 = unlimited. */
  readonly loginsInFlightPerIp?: number
  /** Calls allowed at once above the rate; defaults to one period's worth (a minute, a second). */
  readonly burst?: number
}

/** The few places per address for a password hash: plain, taken before any Effect runs. */
export interface HashPlaces {
  /** Takes one of the address's places: false when it has none left (refuse at once). */
  readonly enter: (ip: string) => boolean
  /** Gives the place back once the request is answered. */
  readonly leave: (ip: string) => void
}

export interface Limits {
  /** A login or registration at `path` from `ip`; a refusal of an address that may be shared is logged once. */
  readonly perAddress: (path: string, ip: string, request: Http.IncomingMessage) => Effect.Effect<void, ConnectError>
  /** A SessionService call of `username`. */
  readonly perUser: (username: string) => Effect.Effect<void, ConnectError>
  readonly hashPlaces: HashPlaces
}

const makeHashPlaces = (perAddress: number): HashPlaces => {
  if (perAddress <= 0) return { enter: () => true, leave: () => {} }
  const inFlight = new Map<string, number>()
  return {
    enter: (ip) => {
      const address = clientKeyOf(ip)
      const running = inFlight.get(address) ?? 0
      if (running >= perAddress) return false
      inFlight.set(address, running + 1)
      return true
    },
    leave: (ip) => {
      const address = clientKeyOf(ip)
      const count = (inFlight.get(address) ?? 1) - 1
      if (count <= 0) inFlight.delete(address)
      else inFlight.set(address, count)
    }
  }
}

/** The HTTP API's token buckets, per client address (IPv6 per /64) and per user, on the Effect clock. */
export const makeLimits = (options: RateLimits, addressing: ClientAddressing): Limits => {
  const { authPerIpPerMinute, burst, sessionPerUserPerSecond } = options
  const ipLimiter = authPerIpPerMinute > 0
    ? makeKeyedRateLimiter({ ratePerSecond: authPerIpPerMinute / 60, burst: burst ?? authPerIpPerMinute })
    : undefined
  const userLimiter = sessionPerUserPerSecond > 0
    ? makeKeyedRateLimiter({
      ratePerSecond: sessionPerUserPerSecond,
      burst: burst ?? Math.max(1, Math.ceil(sessionPerUserPerSecond))
    })
    : undefined

  const take = (limiter: ReturnType<typeof makeKeyedRateLimiter> | undefined, key: string) =>
    limiter === undefined ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const retryAfter = limiter.take(key, now)
      return retryAfter === 0 ? Effect.void : Effect.fail(tooMany(retryAfter, `rate limit exceeded, retry in ${retryAfter}s`))
    })

  /**
   * The per-IP limit refused an address that may stand for many clients: said once per address
   * (the first few hundred), so an operator behind Caddy or Nginx learns about `trusted_proxies`.
   */
  const warnedShared = new Set<string>()
  const warnShared = (request: Http.IncomingMessage, ip: string) =>
    Effect.suspend(() => {
      if (warnedShared.has(ip) || warnedShared.size >= 256) return Effect.void
      const hint = addressing.sharedAddressHint(request, ip)
      if (hint === undefined) return Effect.void
      warnedShared.add(ip)
      return Effect.logWarning(`login rate limit reached for ${ip}; ${hint}`).pipe(Effect.annotateLogs({ client_ip: ip }))
    })

  return {
    perAddress: (path, ip, request) =>
      take(ipLimiter, `${path} ${clientKeyOf(ip)}`).pipe(Effect.tapError(() => warnShared(request, ip))),
    perUser: (username) => take(userLimiter, username),
    hashPlaces: makeHashPlaces(options.loginsInFlightPerIp ?? 0)
  }
}
