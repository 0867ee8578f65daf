import { Context, Effect, Layer, Mailbox } from "effect"
import type { PushMessage } from "../domain/Model.js"

/** A message Logic has made durable, and who should see it pushed. */
export interface CommittedMessage {
  readonly recipients: ReadonlyArray<string>
  readonly message: PushMessage
}

export interface CommittedShape {
  /**
   * A Logic adapter hands over each message once it is durable. Plain and never blocking, since it
   * runs per message on the chat path; what it hands over is pushed after the current turn's acks.
   */
  readonly offer: (recipients: ReadonlyArray<string>, message: PushMessage) => void
  /** The messages in commit order, for the one consumer that pushes them (PushDelivery, or the reference Logic's pusher). */
  readonly messages: Mailbox.ReadonlyMailbox<CommittedMessage>
}

/**
 * The queue between a Logic that commits messages in-process and whoever pushes them: a driven
 * adapter never calls a use case, it offers here and the application takes. One consumer takes
 * everything offered so far in one go, so a turn's messages cost one wake-up, not one per message.
 */
export class Committed extends Context.Tag("resonance/Committed")<Committed, CommittedShape>() {
  static readonly layer: Layer.Layer<Committed> = Layer.scoped(
    Committed,
    Effect.map(
      Effect.acquireRelease(Mailbox.make<CommittedMessage>(), (mailbox) => mailbox.end),
      (mailbox): CommittedShape => ({
        offer: (recipients, message) => {
          mailbox.unsafeOffer({ recipients, message })
        },
        messages: mailbox
      })
    )
  )
}

/**
 * Runs `each` on every committed message, batch by batch, until the queue ends. `each` is plain;
 * one that throws is reported once for its batch and the rest of the batch still goes out.
 */
export const consumeCommitted = (
  messages: Mailbox.ReadonlyMailbox<CommittedMessage>,
  each: (recipients: ReadonlyArray<string>, message: PushMessage) => void
): Effect.Effect<void> => {
  const loop: Effect.Effect<void> = Effect.flatMap(messages.takeAll, ([batch, done]) => {
    let failure: unknown = undefined
    for (const { message, recipients } of batch) {
      try {
        each(recipients, message)
      } catch (error) {
        failure ??= error
      }
    }
    const next = done ? Effect.void : loop
    return failure === undefined ? next : Effect.zipRight(Effect.logError("pushing committed messages failed", failure), next)
  })
  return loop
}
