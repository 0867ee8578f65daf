import { Context, Effect, Layer, Logger, LogLevel, Option, Stream } from "effect"
import type { Duration } from "effect"
import { Etcd3 } from "etcd3"
import { randomUUID } from "node:crypto"

/** Keeps test output to warnings and errors. */
export const quiet = <A, E, R>(self: Effect.Effect<A, E, R>) => Logger.withMinimumLogLevel(self, LogLevel.Warning)

/** A namespace no other test uses, so tests can share one etcd. */
export const freshNamespace = () => `/test-${randomUUID()}/services`

/** Builds `layer` into the current scope and returns its service (released with the scope, unlike `Effect.provide`). */
export const buildService = <I, S, E>(tag: Context.Tag<I, S>, layer: Layer.Layer<I, E>) =>
  Effect.map(Layer.build(layer), Context.get(tag))

/** A plain etcd3 client playing "another process" (Task service, etcdctl), closed with the scope. */
export const adminClient = (endpoint: string) =>
  Effect.acquireRelease(Effect.sync(() => new Etcd3({ hosts: endpoint })), (client) => Effect.sync(() => client.close()))

/** The first element of `changes` (e.g. a SubscriptionRef's) satisfying `predicate`; fails after `timeout`. */
export const waitFor = <A>(changes: Stream.Stream<A>, predicate: (a: A) => boolean, timeout: Duration.DurationInput = "10 seconds") =>
  changes.pipe(
    Stream.filter(predicate),
    Stream.runHead,
    Effect.map(Option.getOrThrow),
    Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error(`condition not met within ${String(timeout)}: ${predicate.toString()}`) })
  )

/** Polls `read` until `predicate` holds; fails after `timeoutMs`. For state living in etcd itself. */
export const eventually = <A>(read: () => Promise<A>, predicate: (a: A) => boolean, timeoutMs = 10_000): Effect.Effect<A, Error> =>
  Effect.promise(async () => {
    const deadline = Date.now() + timeoutMs
    let last: A | undefined
    while (Date.now() < deadline) {
      try {
        last = await read()
        if (predicate(last)) return { ok: true as const, value: last }
      } catch {
        // etcd may be restarting
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return { ok: false as const, last }
  }).pipe(
    Effect.flatMap((result) =>
      result.ok ? Effect.succeed(result.value) : Effect.fail(new Error(`condition not met within ${timeoutMs} ms; last: ${JSON.stringify(result.last)}`))
    )
  )
