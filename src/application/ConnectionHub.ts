import { Context, Effect, Layer } from "effect"
import type { Tracer } from "effect"
import type { ConnectionInfo } from "../domain/Connection.js"

/** A client connection as the use cases drive it; the socket behind it lives in an adapter. */
export interface LiveConnection {
  readonly info: ConnectionInfo
  /** Queues a frame; false when the connection is closed or the client is too far behind. */
  readonly send: (frame: Uint8Array) => boolean
  readonly close: (code: number, reason: string) => void
  /** Stops reading the client's frames (back-pressure) until `resumeReads`. */
  readonly pauseReads: () => void
  readonly resumeReads: () => void
  /** The span of the connection's session, made when first asked for; parents its chat spans. */
  readonly sessionSpan?: () => Tracer.AnySpan
}

/**
 * username → live connections of that user (every device). Plain methods: the push path
 * looks users up once per recipient, so it stays out of Effect.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Set<LiveConnection>>()
  private total = 0

  /** Adds the connection; `first` tells whether the user just came online. Idempotent. */
  add(connection: LiveConnection): { readonly first: boolean } {
    const username = connection.info.username
    let devices = this.byUser.get(username)
    if (devices === undefined) {
      devices = new Set()
      this.byUser.set(username, devices)
    }
    if (devices.has(connection)) return { first: false }
    devices.add(connection)
    this.total++
    return { first: devices.size === 1 }
  }

  /** Removes exactly this connection; `last` tells whether the user just went offline. Idempotent. */
  remove(connection: LiveConnection): { readonly last: boolean } {
    const username = connection.info.username
    const devices = this.byUser.get(username)
    if (devices === undefined || !devices.delete(connection)) return { last: false }
    this.total--
    if (devices.size === 0) {
      this.byUser.delete(username)
      return { last: true }
    }
    return { last: false }
  }

  /** The user's connections, oldest first. */
  connectionsOf(username: string): ReadonlySet<LiveConnection> | undefined {
    return this.byUser.get(username)
  }

  get connectionCount(): number {
    return this.total
  }

  get userCount(): number {
    return this.byUser.size
  }

  users(): IterableIterator<string> {
    return this.byUser.keys()
  }

  *connections(): IterableIterator<LiveConnection> {
    for (const devices of this.byUser.values()) yield* devices
  }
}

export class ConnectionHub extends Context.Tag("resonance/ConnectionHub")<ConnectionHub, ConnectionRegistry>() {
  static readonly layer: Layer.Layer<ConnectionHub> = Layer.effect(
    ConnectionHub,
    Effect.sync(() => new ConnectionRegistry())
  )
}
