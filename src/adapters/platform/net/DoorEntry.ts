import type * as Net from "node:net"
import type { ListenerPolicy } from "./Guard.js"

/** What the front door (./Overload.ts) keeps per connection and per listener. */

export const kEntry = Symbol("resonance.frontDoor")

export interface Entry {
  readonly socket: Net.Socket
  readonly listener: ListenerImpl
  readonly key: string
  readonly acceptedAt: number
  /** Since when it is in its current set. */
  since: number
  inFlight: number
  served: boolean
  trusted: boolean
  set: Set<Entry> | undefined
  /** Closed by the door, its `close` event still to come. */
  closing: boolean
  /** `address:port` on a listener that trusts peers by it (`trustPeer`). */
  readonly peer: string | undefined
}

export interface ListenerImpl {
  readonly policy: ListenerPolicy
  readonly perKey: Map<string, number>
  readonly bans: Map<string, number>
  /** Strangers that have shown nothing (or, requiring credentials, shown none), oldest first. */
  readonly fresh: Set<Entry>
  readonly idle: Set<Entry>
  readonly busy: Set<Entry>
  readonly trustedIdle: Set<Entry>
  readonly peers: Map<string, Entry> | undefined
  open: number
  trusted: number
  readonly closed: Record<string, number>
}

export const entryOf = (socket: Net.Socket): Entry | undefined =>
  (socket as unknown as Record<symbol, Entry | undefined>)[kEntry] ??
    // A TLS socket wraps the TCP socket the listener admitted.
    ((socket as unknown as { _parent?: Net.Socket })._parent as unknown as Record<symbol, Entry | undefined> | undefined)?.[kEntry]
