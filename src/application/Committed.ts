import { Cause, Context, Effect, Layer, Runtime } from "effect"
import type { Scope } from "effect"
import type { PushMessage } from "../domain/Model.js"

/** A message Logic has made durable, and who should see it pushed. */
export interface CommittedMessage {
  readonly recipients: ReadonlyArray<string>
  readonly message: PushMessage
}

/** What pushes committed messages: plain, it runs per message. */
export type CommittedConsumer = (recipients: ReadonlyArray<string>, message: PushMessage) => void

export interface CommittedShape {
  /**
   * A Logic adapter hands over each message once it is durable. Plain and never blocking, since it
   * runs per message on the chat path; what it hands over is pushed after the current turn's acks.
   */
  readonly offer: (recipients: ReadonlyArray<string>, message: PushMessage) => void
  /**
   * Makes `each` the one consumer (PushDelivery, or the reference Logic's pusher) for the life of
   * the scope: it gets every message, in commit order, those offered before it came included.
   * What is offered in one turn reaches it in one go, right after that turn (a microtask), so the
   * acks written in the turn go first. A consumer that throws is reported once per go; the rest of
   * the go still goes out. When the scope closes, what is pending is handed over first.
   */
  readonly consume: (each: CommittedConsumer) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * The queue between a Logic that commits messages in-process and whoever pushes them: a driven
 * adapter never calls a use case, it offers here and the application takes. Plain on both ends:
 * a turn's messages cost one microtask, no fiber (issue 27: chat CPU).
 */
export class Committed extends Context.Tag("resonance/Committed")<Committed, CommittedShape>() {
  static readonly layer: Layer.Layer<Committed> = Layer.scoped(
    Committed,
    Effect.gen(function*() {
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      let pending: Array<CommittedMessage> = []
      let consumer: CommittedConsumer | undefined
      let scheduled = false
      let ended = false

      const drain = () => {
        scheduled = false
        const each = consumer
        if (each === undefined || pending.length === 0) return
        const batch = pending
        pending = []
        let failure: unknown = undefined
        for (const { message, recipients } of batch) {
          try {
            each(recipients, message)
          } catch (error) {
            failure ??= error
          }
        }
        if (failure !== undefined) runFork(Effect.logError("pushing committed messages failed", Cause.die(failure)))
      }
      const schedule = () => {
        if (scheduled || consumer === undefined) return
        scheduled = true
        queueMicrotask(drain)
      }

      // Last: what is still pending goes to the consumer, then nothing more is taken.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          drain()
          ended = true
        })
      )

      return {
        offer: (recipients, message) => {
          if (ended) return
          pending.push({ recipients, message })
          schedule()
        },
        consume: (each) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              consumer = each
              if (pending.length > 0) schedule()
            }),
            () =>
              Effect.sync(() => {
                drain()
                if (consumer === each) consumer = undefined
              })
          )
      }
    })
  )
}
