import type { Clock } from "effect"
import type { PushMessage } from "../../domain/Model.js"
import type { ConnectionRegistry, PushGate } from "../ConnectionHub.js"
import type { LiveConnection } from "../ports/LiveConnection.js"
import { GateOutcome } from "../ConnectionHub.js"

export interface PushGateLimits {
  /** Pushes held behind one chat in flight, and their bytes; past either, what is held is written at once. */
  readonly maxHeldPushes: number
  readonly maxHeldBytes: number
  /** msg_ids a connection remembers having been acked, and for how long: its echoes are known by them. */
  readonly echoMemory: number
  readonly echoMemoryMillis: number
}

export const defaultPushGateLimits: PushGateLimits = {
  maxHeldPushes: 256,
  maxHeldBytes: 1024 * 1024,
  echoMemory: 64,
  echoMemoryMillis: 10_000
}

/**
 * What stands between the fan-out and one connection while its own chats are answered. Logic (or
 * Task) may push a message to its sender's socket before, or after, the ack: an early echo would
 * reach a client that matches its pending message only by msg_id as a second copy. So while a
 * chat is in flight the connection's pushes are held; once the ack is written they follow it, but
 * the push of the acked msg_id; and acked msg_ids are remembered a while, so a late echo is dropped
 * too. The gate sits in the hub only while it holds or remembers something: otherwise the fan-out
 * writes to the connection directly.
 */
export class ConnectionPushGate implements PushGate {
  private holding = false
  private registered = false
  private closed = false
  private heldFrames: Array<Uint8Array> = []
  private heldMessages: Array<PushMessage> = []
  private heldBytes = 0
  private readonly ids: Array<bigint> = []
  private readonly ackedAt: Array<number> = []
  private nextSlot = 0
  /** When the last remembered msg_id goes stale. */
  private forgetAt = 0

  constructor(
    private readonly connection: LiveConnection,
    private readonly hub: ConnectionRegistry,
    private readonly clock: Clock.Clock,
    private readonly limits: PushGateLimits
  ) {}

  get isHolding(): boolean {
    return this.holding
  }

  /** A chat of this connection goes to Logic: its pushes wait for the answer. */
  hold(): void {
    if (this.closed) return
    this.holding = true
    this.register()
  }

  /** The chat's ack was written: remembers its msg_id (none when it failed) and writes what was held, but its echo. */
  answered(msgId: bigint | undefined): void {
    if (this.closed) return
    const now = this.clock.unsafeCurrentTimeMillis()
    if (msgId !== undefined) this.remember(msgId, now)
    this.release(now)
  }

  offer(frameOf: () => Uint8Array, message: PushMessage): GateOutcome {
    const now = this.clock.unsafeCurrentTimeMillis()
    if (this.isEcho(message, now)) return GateOutcome.Echo
    const frame = frameOf()
    if (this.holding) {
      const { maxHeldPushes, maxHeldBytes } = this.limits
      if (this.heldFrames.length < maxHeldPushes && this.heldBytes + frame.byteLength <= maxHeldBytes) {
        this.heldFrames.push(frame)
        this.heldMessages.push(message)
        this.heldBytes += frame.byteLength
        return GateOutcome.Held
      }
      // A Logic this slow must not make a connection hold without bound: what waits goes out now.
      this.release(now)
    } else if (now >= this.forgetAt) {
      this.unregister()
    }
    return this.connection.send(frame) ? GateOutcome.Sent : GateOutcome.Failed
  }

  /** The connection closed: nothing held is written, and the hub forgets the gate. */
  close(): void {
    this.closed = true
    this.holding = false
    this.heldFrames = []
    this.heldMessages = []
    this.heldBytes = 0
    this.unregister()
  }

  /** Stops holding and writes what was held, in arrival order, but this connection's own echoes. */
  private release(now: number): void {
    this.holding = false
    const frames = this.heldFrames
    const messages = this.heldMessages
    if (frames.length > 0) {
      this.heldFrames = []
      this.heldMessages = []
      this.heldBytes = 0
      for (let i = 0; i < frames.length; i++) {
        if (!this.isEcho(messages[i]!, now)) this.connection.send(frames[i]!)
      }
    }
    if (now >= this.forgetAt) this.unregister()
  }

  private isEcho(message: PushMessage, now: number): boolean {
    if (now >= this.forgetAt || message.fromUsername !== this.connection.info.username) return false
    const { ids, ackedAt } = this
    const window = this.limits.echoMemoryMillis
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] === message.msgId && now - ackedAt[i]! < window) return true
    }
    return false
  }

  private remember(msgId: bigint, now: number): void {
    const slot = this.nextSlot
    this.ids[slot] = msgId
    this.ackedAt[slot] = now
    this.nextSlot = (slot + 1) % this.limits.echoMemory
    this.forgetAt = now + this.limits.echoMemoryMillis
    this.register()
  }

  private register(): void {
    if (this.registered) return
    this.registered = true
    this.hub.gate(this.connection, this)
  }

  private unregister(): void {
    if (this.holding) return
    if (this.registered) {
      this.registered = false
      this.hub.ungate(this.connection)
    }
    this.ids.length = 0
    this.ackedAt.length = 0
    this.nextSlot = 0
  }
}
