import { Context, Effect, Layer } from "effect"
import type { PushMessage } from "../domain/Model.js"
import type { LiveConnection } from "./ports/LiveConnection.js"

/** What became of a push offered to a gated connection. */
export const GateOutcome = {
  /** Written to the socket. */
  Sent: 0,
  /** Kept, to be written after the connection's chat in flight is answered. */
  Held: 1,
  /** The connection's own message coming back to it: not written. */
  Echo: 2,
  /** The connection is closed or too far behind. */
  Failed: 3
} as const
export type GateOutcome = (typeof GateOutcome)[keyof typeof GateOutcome]

/**
 * Stands between the fan-out and a connection for a while (see `Dispatcher/PushGate`): while it
 * has a chat in flight, or remembers msg_ids it was answered for, its pushes go through `offer`.
 */
export interface PushGate {
  /**
   * Takes a push in place of `connection.send`. `frameOf` encodes the push once, shared by every
   * recipient; an echo never asks for it.
   */
  readonly offer: (frameOf: () => Uint8Array, message: PushMessage) => GateOutcome
}

/**
 * username → live connections of that user (every device). Plain methods: the push path
 * looks users up once per recipient, so it stays out of Effect.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Set<LiveConnection>>()
  private readonly gates = new Map<LiveConnection, PushGate>()
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
    this.gates.delete(connection)
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

  /** Routes the connection's pushes through `gate` until `ungate`. */
  gate(connection: LiveConnection, gate: PushGate): void {
    this.gates.set(connection, gate)
  }

  ungate(connection: LiveConnection): void {
    this.gates.delete(connection)
  }

  /** The gates by connection, or undefined while there is none: in the common case one check per push. */
  activeGates(): ReadonlyMap<LiveConnection, PushGate> | undefined {
    return this.gates.size === 0 ? undefined : this.gates
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
