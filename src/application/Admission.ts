import { CloseCodes } from "../domain/Connection.js"
import { clientKeyOf } from "../domain/RateLimit.js"
import type { ConnectionRegistry } from "./ConnectionHub.js"

/** How many connections a gateway holds; 0 means unlimited. */
export interface AdmissionLimits {
  readonly maxConnections: number
  /** Per client key: an IPv4 address, or an IPv6 address by its /64. */
  readonly maxConnectionsPerIp: number
  readonly maxDevicesPerUser: number
}

/** Why an upgrade is refused before authentication; also the metric's reason label. */
export type AdmissionRefusal = "global_limit" | "ip_limit"

/**
 * Admission and device policy of client connections, plain and synchronous so a socket adapter
 * calls it per upgrade without entering Effect. A slot is taken by `begin` (before authentication),
 * held while the upgrade is pending, and given back by `abandon` or, once open, `disconnected`.
 */
export interface Admission {
  /** Takes a slot for an upgrade from `ip`, or names the limit it would break. */
  readonly begin: (ip: string) => AdmissionRefusal | undefined
  /** The upgrade that `begin` admitted will not open (refused, or the socket went away). */
  readonly abandon: (ip: string) => void
  /** The upgrade is authenticated: no longer pending, though not yet open. */
  readonly authenticated: () => void
  /**
   * The connection of `username` opens: counted, and the user's oldest devices past
   * `maxDevicesPerUser` closed with 4002 to make room for it.
   */
  readonly connected: (username: string) => void
  /** An open connection from `ip` closed. */
  readonly disconnected: (ip: string) => void
}

export const makeAdmission = (limits: AdmissionLimits, hub: ConnectionRegistry): Admission => {
  const perKey = new Map<string, number>()
  let pending = 0
  let open = 0

  const releaseIp = (ip: string) => {
    const key = clientKeyOf(ip)
    const count = (perKey.get(key) ?? 1) - 1
    if (count <= 0) perKey.delete(key)
    else perKey.set(key, count)
  }

  return {
    begin: (ip) => {
      if (limits.maxConnections > 0 && open + pending >= limits.maxConnections) return "global_limit"
      const key = clientKeyOf(ip)
      const fromIp = perKey.get(key) ?? 0
      if (limits.maxConnectionsPerIp > 0 && fromIp >= limits.maxConnectionsPerIp) return "ip_limit"
      perKey.set(key, fromIp + 1)
      pending++
      return undefined
    },
    abandon: (ip) => {
      pending--
      releaseIp(ip)
    },
    authenticated: () => {
      pending--
    },
    connected: (username) => {
      open++
      if (limits.maxDevicesPerUser <= 0) return
      const count = hub.deviceCount(username)
      if (count < limits.maxDevicesPerUser) return
      let excess = count - limits.maxDevicesPerUser + 1
      for (const oldest of hub.connectionsOf(username)!) {
        if (excess-- <= 0) break
        oldest.close(CloseCodes.DeviceLimit, "device limit reached: a newer device connected")
      }
    },
    disconnected: (ip) => {
      open--
      releaseIp(ip)
    }
  }
}
