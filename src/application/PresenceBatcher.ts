import { Context, Deferred, Duration, Effect, Exit, FiberId, Layer, Schedule, Stream } from "effect"
import type { LogicError } from "../domain/Errors.js"
import type { PresenceBatch } from "../domain/Model.js"
import type { PresenceEvent } from "../domain/Presence.js"
import { foldPresence, offline, online } from "../domain/Presence.js"
import { ConnectionHub, isDeviceSet } from "./ConnectionHub.js"
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
        // Events not yet taken: a plain array read from `head`, so an offer is a push and a batch
        // a slice, with no fiber woken per event. A storm of 5,000 connects makes 100 batches at
        // the contract's batch_size of 50, so the cycle below is what a storm pays per batch
        // (bench/README, "Storm CPU per connect").
        let queued: Array<PresenceEvent> = []
        let head = 0
        let seqId = 0n
        let taken: Array<PresenceEvent> = []
        /** What the loop waits for, and the deferred that wakes it: any event, or a full batch. */
        let waitingFor: "event" | "full" | undefined = undefined
        let wake: Deferred.Deferred<void> | undefined = undefined
        /** When the batch being gathered must leave (clock ms); +∞ while none is gathered. */
        let deadline = Number.POSITIVE_INFINITY
        /** The flush timer waits here while there is no deadline. */
        let timerIdle: Deferred.Deferred<void> | undefined = undefined

        /** Users whose events were not queued because the queue was full; `undefined`: not overflowed. */
        let overflowed: Set<string> | undefined = undefined

        const waiting = () => queued.length - head
        const pending = () => taken.length + waiting()

        const wakeLoop = () => {
          const deferred = wake!
          waitingFor = undefined
          wake = undefined
          Deferred.unsafeDone(deferred, Exit.void)
        }

        /** Moves up to `max` queued events into `taken`, synchronously: nothing is lost to an interruption. */
        const takeQueued = (max: number) => {
          const count = Math.min(max, waiting())
          if (count <= 0) return
          for (let i = 0; i < count; i++) taken.push(queued[head + i]!)
          head += count
          if (head === queued.length) {
            queued = []
            head = 0
          } else if (head >= 1024 && head * 2 >= queued.length) {
            queued = queued.slice(head)
            head = 0
          }
        }

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
          queued.push(event)
          if (waitingFor === "event" || (waitingFor === "full" && pending() >= batchSize)) wakeLoop()
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
            // The oldest device's address; no set is made for a user with one device.
            const devices = hub.devicesOf(username)
            const first = devices === undefined || !isDeviceSet(devices) ? devices : devices.values().next().value
            enqueue(online(username, first?.info.remoteAddress ?? "", at))
          }
          if (skipped !== undefined && sendOffline) {
            for (const username of skipped) if (hub.devicesOf(username) === undefined) enqueue(offline(username, at))
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
          const logFailure = (error: LogicError) =>
            Effect.sync(() => failures++).pipe(
              Effect.zipRight(Effect.logWarning("presence sync failed; retrying", {
                code: error.code,
                message: error.message,
                seqId: String(batch.seqId),
                // Past max_pending, new events name users to resync instead of queueing.
                overflowed: overflowed !== undefined
              }))
            )
          const send = logic.syncStatus(batch)
          // The retry schedule is built only once an attempt has failed: the first failure is
          // replayed into it, so the backoff is the schedule's from the first attempt on.
          return send.pipe(
            Effect.catchAll((first) => {
              let replay = true
              const attempt = Effect.suspend(() => {
                if (!replay) return send
                replay = false
                return Effect.fail(first)
              })
              return Effect.retry(Effect.tapError(attempt, logFailure), retry)
            }),
            // No span of its own: in a fresh process a span per batch doubled what the batcher
            // costs a storm (bench/presence-batcher.ts: 6.3-9.5 microseconds per event with it,
            // 3.4-5.1 without). Across processes the Logic client's span traces the RPC; the
            // embedded Logic's syncStatus is an update of an in-memory index.
            Effect.flatMap(() => {
              metrics.presenceBatch(batch.onlineBatch.length + batch.offlineBatch.length)
              taken = []
              return failures > 0 || overflowed !== undefined ? resync : Effect.void
            })
          )
        })

        /** Waits until `enqueue` (or the flush timer, for "full") wakes the loop. */
        const waitFor = (what: "event" | "full") =>
          Effect.suspend(() => {
            const deferred = Deferred.unsafeMake<void>(FiberId.none)
            wake = deferred
            waitingFor = what
            return Deferred.await(deferred)
          })

        const collect = Effect.gen(function*() {
          if (taken.length === 0 && waiting() === 0) yield* waitFor("event")
          takeQueued(batchSize - taken.length)
          if (taken.length >= batchSize) return
          const now = clock.unsafeCurrentTimeMillis()
          // Idle: a user who just connected is announced now; under load the next ones wait and batch.
          if (now - lastSentAt >= flushMillis && taken.some(isOnline)) return
          deadline = now + flushMillis
          if (timerIdle !== undefined) Deferred.unsafeDone(timerIdle, Exit.void)
          yield* waitFor("full")
          deadline = Number.POSITIVE_INFINITY
          takeQueued(batchSize - taken.length)
        })

        // The flush timer: one fiber for the batcher's life instead of a race per batch. It sleeps
        // until the gathered batch's deadline and wakes the loop if that batch is still waiting; a
        // batch that filled first has reset the deadline, and the timer sleeps on to the next one.
        const flushTimer = Effect.gen(function*() {
          for (;;) {
            if (deadline === Number.POSITIVE_INFINITY) {
              const idle = Deferred.unsafeMake<void>(FiberId.none)
              timerIdle = idle
              yield* Deferred.await(idle)
              timerIdle = undefined
              continue
            }
            const left = deadline - clock.unsafeCurrentTimeMillis()
            if (left > 0) {
              yield* Effect.sleep(Duration.millis(left))
              continue
            }
            deadline = Number.POSITIVE_INFINITY
            if (waitingFor === "full") wakeLoop()
          }
        })

        const flushOnShutdown = Effect.gen(function*() {
          takeQueued(waiting())
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
        yield* Effect.forkScoped(flushTimer)
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
          backlog: Effect.sync(pending)
        }
      })
    )
}
