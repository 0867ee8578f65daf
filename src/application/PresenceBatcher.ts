import { Context, Deferred, Duration, Effect, Exit, Layer, Option, Queue, Schedule, Stream } from "effect"
import type { PresenceBatch } from "../domain/Model.js"
import type { PresenceEvent } from "../domain/Presence.js"
import { foldPresence, offline, online } from "../domain/Presence.js"
import { ConnectionHub } from "./ConnectionHub.js"
import { GatewayIdentity } from "./ports/GatewayIdentity.js"
import { Logic } from "./ports/Logic.js"
import { Metrics } from "./ports/Metrics.js"

export interface PresenceBatcherOptions {
  readonly batchSize: number
  readonly flushInterval: Duration.DurationInput
  /** Backoff between failed SyncStatus attempts; retried until Logic answers. */
  readonly retry?: Schedule.Schedule<unknown, unknown>
  /** How long shutdown may spend flushing what is left. */
  readonly flushTimeout?: Duration.DurationInput
  /** `false`: offline events are not reported (upstream never sends them). Default true. */
  readonly sendOffline?: boolean
  /**
   * Events held while Logic does not answer. Past it, events are no longer queued: the users they
   * name are remembered and, once Logic answers, the whole online set here is announced again
   * along with the offline state of those users. Default 100,000.
   */
  readonly maxPending?: number
}

export interface PresenceBatcherShape {
  readonly online: (username: string, remoteIp: string) => void
  readonly offline: (username: string) => void
  /** Events accepted but not yet acknowledged by Logic. */
  readonly backlog: Effect.Effect<number>
}

const isOnline = (event: PresenceEvent) => event._tag === "Online"

export const defaultPresenceRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds"))
)

/**
 * Presence to Logic in batches: a batch leaves when `batchSize` events wait or `flushInterval`
 * has passed since the first of them, whichever comes first — except that an online event finding
 * the batcher idle (no batch left within `flushInterval`) leaves at once, since Logic pushes
 * nothing to a user before it knows their route. Nothing is dropped: a failed SyncStatus is
 * retried with backoff and shutdown flushes what was taken.
 */
export class PresenceBatcher extends Context.Tag("resonance/PresenceBatcher")<PresenceBatcher, PresenceBatcherShape>() {
  static readonly layer = (options: PresenceBatcherOptions) =>
    Layer.scoped(
      PresenceBatcher,
      Effect.gen(function*() {
        const logic = yield* Logic
        const identity = yield* GatewayIdentity
        const hub = yield* ConnectionHub
        const metrics = yield* Metrics
        const clock = yield* Effect.clock
        const nowSeconds = () => BigInt(Math.floor(clock.unsafeCurrentTimeMillis() / 1000))
        const sendOffline = options.sendOffline ?? true
        const maxPending = Math.max(1, options.maxPending ?? 100_000)
        const batchSize = Math.max(1, options.batchSize)
        const flushMillis = Duration.toMillis(Duration.decode(options.flushInterval))
        /** When the last batch left; a batch within `flushInterval` of it means events are coming in numbers. */
        let lastSentAt = Number.NEGATIVE_INFINITY
        const retry = options.retry ?? defaultPresenceRetry
        const queue = yield* Queue.unbounded<PresenceEvent>()
        let seqId = 0n
        let taken: Array<PresenceEvent> = []
        let batchFull = yield* Deferred.make<void>()
        let waitingForFull = false

        /** Users whose events were not queued because the queue was full; `undefined`: not overflowed. */
        let overflowed: Set<string> | undefined = undefined

        const pending = () => taken.length + Option.getOrElse(queue.unsafeSize(), () => 0)

        const offer = (event: PresenceEvent) => {
          if (overflowed !== undefined) {
            if (overflowed.size < maxPending) overflowed.add(event.username)
            return
          }
          if (pending() >= maxPending) {
            overflowed = new Set([event.username])
            return
          }
          enqueue(event)
        }

        const enqueue = (event: PresenceEvent) => {
          queue.unsafeOffer(event)
          if (waitingForFull && pending() >= batchSize) {
            waitingForFull = false
            Deferred.unsafeDone(batchFull, Exit.void)
          }
        }

        const toBatch = (events: ReadonlyArray<PresenceEvent>): PresenceBatch => {
          const folded = foldPresence(events)
          seqId++
          return { seqId, gatewayId: identity.id, onlineBatch: folded.online, offlineBatch: folded.offline }
        }

        // After Logic was unreachable its view may be stale: re-announce everyone connected here.
        // After an overflow, the users whose events were not queued and who are gone are reported offline.
        const resync = Effect.sync(() => {
          const at = nowSeconds()
          const skipped = overflowed
          overflowed = undefined
          for (const username of hub.users()) {
            const first = hub.connectionsOf(username)?.values().next().value
            enqueue(online(username, first?.info.remoteAddress ?? "", at))
          }
          if (skipped !== undefined && sendOffline) {
            for (const username of skipped) if (hub.connectionsOf(username) === undefined) enqueue(offline(username, at))
          }
          return skipped?.size
        }).pipe(
          Effect.flatMap((skipped) =>
            skipped === undefined
              ? Effect.void
              : Effect.logInfo("presence resynced after an overflow", { skipped })
          )
        )

        const sendTaken = Effect.suspend(() => {
          if (taken.length === 0) return Effect.void
          const batch = toBatch(taken)
          lastSentAt = clock.unsafeCurrentTimeMillis()
          let failures = 0
          return logic.syncStatus(batch).pipe(
            Effect.tapError((error) =>
              Effect.sync(() => failures++).pipe(
                Effect.zipRight(Effect.logWarning("presence sync failed; retrying", {
                  code: error.code,
                  message: error.message,
                  seqId: String(batch.seqId),
                  // Past max_pending, new events name users to resync instead of queueing.
                  overflowed: overflowed !== undefined
                }))
              )
            ),
            Effect.retry(retry),
            Effect.tap(() =>
              Effect.sync(() => {
                metrics.presenceBatch(batch.onlineBatch.length + batch.offlineBatch.length)
                taken = []
              })
            ),
            Effect.tap(() => (failures > 0 || overflowed !== undefined ? resync : Effect.void)),
            Effect.withSpan("PresenceBatcher.syncStatus", { attributes: { "presence.events": taken.length } })
          )
        })

        const collect = Effect.gen(function*() {
          yield* Effect.uninterruptibleMask((restore) =>
            restore(Queue.takeBetween(queue, 1, batchSize)).pipe(
              Effect.tap((items) => Effect.sync(() => taken.push(...items)))
            )
          )
          if (taken.length >= batchSize) return
          // Idle: a user who just connected is announced now; under load the next ones wait and batch.
          if (clock.unsafeCurrentTimeMillis() - lastSentAt >= flushMillis && taken.some(isOnline)) return
          batchFull = yield* Deferred.make<void>()
          waitingForFull = true
          yield* Effect.race(Deferred.await(batchFull), Effect.sleep(options.flushInterval))
          waitingForFull = false
          yield* Effect.uninterruptible(
            Queue.takeUpTo(queue, batchSize - taken.length).pipe(
              Effect.tap((items) => Effect.sync(() => taken.push(...items)))
            )
          )
        })

        const flushOnShutdown = Effect.gen(function*() {
          const rest = yield* Queue.takeAll(queue)
          taken.push(...rest)
          while (taken.length > 0) {
            const chunk = taken.slice(0, batchSize)
            const batch = toBatch(chunk)
            yield* logic.syncStatus(batch).pipe(Effect.retry(Schedule.recurs(2).pipe(Schedule.addDelay(() => "100 millis"))))
            taken = taken.slice(chunk.length)
            metrics.presenceBatch(batch.onlineBatch.length + batch.offlineBatch.length)
          }
        }).pipe(
          Effect.timeout(options.flushTimeout ?? "5 seconds"),
          Effect.catchAll((error) =>
            Effect.logError("presence events could not be flushed on shutdown", { pending: taken.length, error: String(error) })
          )
        )

        yield* Effect.addFinalizer(() => flushOnShutdown)
        yield* Effect.forkScoped(Effect.forever(Effect.zipRight(collect, sendTaken)))
        // Logic keys routes by gateway id: under a new id, everyone here is announced again.
        yield* identity.changes.pipe(
          Stream.runForEach((id) =>
            Effect.logInfo("gateway id changed; announcing the online set again", { gatewayId: id }).pipe(Effect.zipRight(resync))
          ),
          Effect.forkScoped
        )

        return {
          online: (username, remoteIp) => offer(online(username, remoteIp, nowSeconds())),
          offline: (username) => {
            if (sendOffline) offer(offline(username, nowSeconds()))
          },
          backlog: Effect.map(Queue.size(queue), (size) => Math.max(0, size) + taken.length)
        }
      })
    )
}
