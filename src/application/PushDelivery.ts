import { Context, Effect, Layer } from "effect"
import type { PushMessage } from "../domain/Model.js"
import { pushPacket } from "../domain/Packet.js"
import { Committed } from "./Committed.js"
import { ConnectionHub, GateOutcome, isDeviceSet } from "./ConnectionHub.js"
import { FrameCodec } from "./ports/FrameCodec.js"
import type { LiveConnection } from "./ports/LiveConnection.js"
import { Metrics } from "./ports/Metrics.js"

export interface DeliveryReport {
  /** Targets with no connection here, or whose every write failed. */
  readonly failedUsernames: ReadonlyArray<string>
  /** Frames written. */
  readonly delivered: number
}

export interface PushDeliveryShape {
  /** Plain form for in-process callers already inside a request. `usernames` are distinct. */
  readonly deliverNow: (usernames: ReadonlyArray<string>, message: PushMessage) => DeliveryReport
  readonly deliver: (usernames: ReadonlyArray<string>, message: PushMessage) => Effect.Effect<DeliveryReport>
}

/**
 * Fans a message out: the frame is encoded once, when a device first needs it, and the same bytes
 * go to every device. A connection with a gate (a chat of its own in flight, or msg_ids it was
 * just answered for) gets the push through it: held until the ack is written, and dropped when it
 * is its own echo. So a sender's socket is spared its echo whoever pushes (the Task service, or
 * the embedded Logic through `layerCommitted`), and its other devices get the message.
 */
export class PushDelivery extends Context.Tag("resonance/PushDelivery")<PushDelivery, PushDeliveryShape>() {
  static readonly layer = Layer.effect(
    PushDelivery,
    Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const codec = yield* FrameCodec
      const metrics = yield* Metrics

      const deliverNow = (usernames: ReadonlyArray<string>, message: PushMessage): DeliveryReport => {
        const started = performance.now()
        // Encoded at the first device that takes it: a direct chat's copy for its sender, whose
        // only device is usually the one that sent it, is an echo and never needs the bytes.
        let frame: Uint8Array | undefined
        const frameOf = (): Uint8Array => (frame ??= codec.encode(pushPacket(message)))
        const gates = hub.activeGates()
        const failedUsernames: Array<string> = []
        let delivered = 0
        /** 0: the connection's own echo, not attempted; 1: attempted, not reached; 2: written or held. */
        const offer = (connection: LiveConnection): 0 | 1 | 2 => {
          const gate = gates === undefined ? undefined : gates.get(connection)
          if (gate === undefined) return connection.send(frameOf()) ? 2 : 1
          const outcome = gate.offer(frameOf, message)
          return outcome === GateOutcome.Echo ? 0 : outcome === GateOutcome.Failed ? 1 : 2
        }
        for (const username of usernames) {
          const devices = hub.devicesOf(username)
          if (devices === undefined) {
            failedUsernames.push(username)
            continue
          }
          let reached = 0
          let attempted = 0
          if (isDeviceSet(devices)) {
            for (const connection of devices) {
              const result = offer(connection)
              if (result > 0) attempted++
              if (result === 2) reached++
            }
          } else {
            const result = offer(devices)
            attempted = result > 0 ? 1 : 0
            reached = result === 2 ? 1 : 0
          }
          // A user whose only device is the sender, getting its own echo, counts as reached.
          if (reached === 0 && attempted > 0) failedUsernames.push(username)
          delivered += reached
        }
        metrics.messagesSent(delivered)
        if (failedUsernames.length > 0) metrics.pushFailed(failedUsernames.length)
        metrics.pushDuration((performance.now() - started) / 1000)
        return { failedUsernames, delivered }
      }

      return {
        deliverNow,
        deliver: (usernames, message) => Effect.sync(() => deliverNow(usernames, message))
      }
    })
  )

  /**
   * Pushes what an in-process Logic committed (the `Committed` queue), as the Task service does
   * over PushService: the queue's consumer for the life of the Layer, taking its messages in order
   * right after the acks of the turn that committed them are written.
   */
  static readonly layerCommitted: Layer.Layer<never, never, PushDelivery | Committed> = Layer.scopedDiscard(
    Effect.gen(function*() {
      const { deliverNow } = yield* PushDelivery
      const committed = yield* Committed
      yield* committed.consume(deliverNow)
    })
  )
}
