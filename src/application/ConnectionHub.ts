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

/** A user's devices: the connection itself while it is the only one (nearly every user), else a set. */
type Devices = LiveConnection | Set<LiveConnection>

/** Whether `devicesOf` answered with several connections (else the only one). */
export const isDeviceSet = (devices: LiveConnection | ReadonlySet<LiveConnection>): devices is ReadonlySet<LiveConnection> =>
  devices instanceof Set

const FIRST = Object.freeze({ first: true })
const NOT_FIRST = Object.freeze({ first: false })
const LAST = Object.freeze({ last: true })
const NOT_LAST = Object.freeze({ last: false })

/**
 * username → live connections of that user (every device). Plain methods: the push path
 * looks users up once per recipient, so it stays out of Effect. A user with one device keeps no
 * set of its own (a `Set` and its table cost ~90 bytes per online user); the second device makes
 * one, and the set goes again when one device is left.
 */
export class ConnectionRegistry {
  private readonly byUser = new Map<string, Devices>()
  private readonly gates = new Map<LiveConnection, PushGate>()
  private total = 0

  /** Adds the connection; `first` tells whether the user just came online. Idempotent. */
  add(connection: LiveConnection): { readonly first: boolean } {
    const username = connection.info.username
    const devices = this.byUser.get(username)
    if (devices === undefined) {
      this.byUser.set(username, connection)
      this.total++
      return FIRST
    }
    if (devices instanceof Set) {
      if (devices.has(connection)) return NOT_FIRST
      devices.add(connection)
    } else {
      if (devices === connection) return NOT_FIRST
      this.byUser.set(username, new Set([devices, connection]))
    }
    this.total++
    return NOT_FIRST
  }

  /** Removes the connection; `last` tells whether the user just went offline here. Idempotent. */
  remove(connection: LiveConnection): { readonly last: boolean } {
    const username = connection.info.username
    const devices = this.byUser.get(username)
    if (devices === undefined) return NOT_LAST
    let last = false
    if (devices instanceof Set) {
      if (!devices.delete(connection)) return NOT_LAST
      if (devices.size === 1) this.byUser.set(username, devices.values().next().value!)
    } else {
      if (devices !== connection) return NOT_LAST
      this.byUser.delete(username)
      last = true
    }
    this.total--
    this.gates.delete(connection)
    return last ? LAST : NOT_LAST
  }

  /**
   * The user's devices without a copy, for the push path: the connection itself when it is the
   * only one, else the set of them, oldest first.
   */
  devicesOf(username: string): LiveConnection | ReadonlySet<LiveConnection> | undefined {
    return this.byUser.get(username)
  }

  /** How many connections the user has here. */
  deviceCount(username: string): number {
    const devices = this.byUser.get(username)
    return devices === undefined ? 0 : devices instanceof Set ? devices.size : 1
  }

  /** The user's connections, oldest first (a new set for a user with one device: not for hot paths). */
  connectionsOf(username: string): ReadonlySet<LiveConnection> | undefined {
    const devices = this.byUser.get(username)
    return devices === undefined || devices instanceof Set ? devices : new Set([devices])
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
    for (const devices of this.byUser.values()) {
      if (devices instanceof Set) yield* devices
      else yield devices
    }
  }
}

export class ConnectionHub extends Context.Tag("resonance/ConnectionHub")<ConnectionHub, ConnectionRegistry>() {
  static readonly layer: Layer.Layer<ConnectionHub> = Layer.effect(
    ConnectionHub,
    Effect.sync(() => new ConnectionRegistry())
  )
}
