import { Effect, Either, Layer, Queue, Schedule, Stream, SubscriptionRef } from "effect"
import type { ConfigError, Scope } from "effect"
import type { IKeyValue } from "etcd3"
import { ServiceDiscovery } from "../../application/ports/ServiceDiscovery.js"
import { acquireEtcdClient, etcdCall, requiredEtcdClientConfig } from "./Client.js"
import type { EtcdClientOptions, EtcdConfigError, EtcdError } from "./Client.js"
import type { ServiceInstance } from "./ServiceInstance.js"
import { decodeServiceInstance, defaultNamespace, grpcAddress, namespaceSetting, servicePrefix } from "./ServiceInstance.js"

export interface DiscoveredInstance {
  readonly id: string
  /** `host:port` from the first gRPC endpoint, without `grpc://`. */
  readonly address: string
  readonly raw: ServiceInstance
}

export interface WatchServiceOptions extends DiscoveryOptions {
  readonly serviceName: string
  /** Pause between attempts to (re)list and watch; default exponential from 100 ms, capped at 3 s. */
  readonly retry?: Schedule.Schedule<unknown, EtcdError>
}

type WatchEvent =
  | { readonly _tag: "Put"; readonly kv: IKeyValue }
  | { readonly _tag: "Delete"; readonly key: string }
  | { readonly _tag: "Broken"; readonly error: unknown }

const defaultRetry: Schedule.Schedule<unknown, EtcdError> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("3 seconds")),
  Schedule.jittered
)

const byId = (a: DiscoveredInstance, b: DiscoveredInstance) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/**
 * The live set of instances of one service: a full listing, then a prefix watch from the listed
 * revision. A broken watch (etcd restarted, compacted, unreachable) is dropped and the listing
 * redone, so the set converges to etcd's whatever happened meanwhile; meanwhile the last known
 * set stays. Values that do not parse are skipped with a warning. With etcd unreachable at start
 * the set is empty and attempts go on. The ref changes only when the set does.
 */
export const watchService = (
  options: WatchServiceOptions
): Effect.Effect<SubscriptionRef.SubscriptionRef<ReadonlyArray<DiscoveredInstance>>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = servicePrefix(options.namespace ?? defaultNamespace, options.serviceName)
    const client = yield* acquireEtcdClient(options)
    const ref = yield* SubscriptionRef.make<ReadonlyArray<DiscoveredInstance>>([])
    // key -> raw value and what it decoded to (undefined when it did not)
    const entries = new Map<string, { readonly value: string; readonly instance: DiscoveredInstance | undefined }>()

    let published = "[]"

    /** Sets the ref from `entries`, unless that changes nothing for a reader. */
    const publish = Effect.suspend(() => {
      const instances = Array.from(entries.values(), (entry) => entry.instance)
        .filter((instance): instance is DiscoveredInstance => instance !== undefined)
        .sort(byId)
      const signature = JSON.stringify(instances)
      if (signature === published) return Effect.void
      published = signature
      return SubscriptionRef.set(ref, instances)
    })

    const applyPut = (kv: IKeyValue): Effect.Effect<void> => {
      const key = kv.key.toString()
      const value = kv.value.toString()
      if (entries.get(key)?.value === value) return Effect.void
      const decoded = Either.flatMap(decodeServiceInstance(value), (raw) => {
        const address = grpcAddress(raw)
        return address === undefined
          ? Either.left("no grpc:// or host:port endpoint")
          : Either.right<DiscoveredInstance>({ id: raw.id, address, raw })
      })
      entries.set(key, { value, instance: Either.getOrUndefined(decoded) })
      return Either.isLeft(decoded)
        ? Effect.logWarning("skipping an unreadable service instance in etcd", { key, reason: decoded.left })
        : Effect.void
    }

    const connect = Effect.gen(function*() {
      const listing = yield* etcdCall("list instances", () => client.getAll().prefix(prefix).exec())
      entries.clear()
      for (const kv of listing.kvs) yield* applyPut(kv)
      yield* publish

      const events = yield* Queue.unbounded<WatchEvent>()
      yield* Effect.acquireRelease(
        // `watcher()` attaches at once (unlike `create()`, which resolves only once connected), so
        // listeners are on before anything can happen, a disconnect while connecting included.
        Effect.sync(() =>
          client.watch().prefix(prefix).startRevision(String(BigInt(listing.header.revision) + 1n)).watcher()
            .on("put", (kv) => events.unsafeOffer({ _tag: "Put", kv }))
            .on("delete", (kv) => events.unsafeOffer({ _tag: "Delete", key: kv.key.toString() }))
            .on("disconnected", (error) => events.unsafeOffer({ _tag: "Broken", error }))
            .on("error", (error) => events.unsafeOffer({ _tag: "Broken", error }))
        ),
        (watcher) => Effect.promise(() => watcher.cancel()).pipe(Effect.timeout("2 seconds"), Effect.ignore)
      )
      return events
    })

    const follow = (events: Queue.Queue<WatchEvent>) =>
      Effect.gen(function*() {
        while (true) {
          const event = yield* Queue.take(events)
          switch (event._tag) {
            case "Put":
              yield* applyPut(event.kv)
              yield* publish
              break
            case "Delete":
              entries.delete(event.key)
              yield* publish
              break
            case "Broken":
              return yield* Effect.logWarning("etcd discovery watch broken; listing again", { prefix, error: String(event.error) })
          }
        }
      })

    const retry = Schedule.andThen(options.retry ?? defaultRetry, defaultRetry)
    const cycle = Effect.scoped(
      connect.pipe(
        Effect.tapError((error) => Effect.logWarning("etcd discovery cannot list; retrying", { prefix, error: error.message })),
        Effect.retry(retry),
        Effect.flatMap(follow)
      )
    )
    yield* Effect.forkScoped(Effect.forever(cycle))
    return ref
  })

export interface DiscoveryOptions extends EtcdClientOptions {
  /** Default `/resonance/services`. */
  readonly namespace?: string
}

/** `ServiceDiscovery` from etcd's registry: each service's instances as `host:port` addresses. */
export const layer = (options: DiscoveryOptions): Layer.Layer<ServiceDiscovery> =>
  Layer.succeed(ServiceDiscovery, {
    addresses: (serviceName) =>
      Effect.gen(function*() {
        const instances = yield* watchService({ ...options, serviceName })
        const addresses = yield* SubscriptionRef.make<ReadonlyArray<string>>(
          (yield* SubscriptionRef.get(instances)).map((instance) => instance.address)
        )
        yield* instances.changes.pipe(
          Stream.runForEach((list) => SubscriptionRef.set(addresses, list.map((instance) => instance.address))),
          Effect.forkScoped
        )
        return addresses
      })
  })

/** The discovery's options from `etcd.*` and `registry.namespace`; also for `watchService` callers. */
export const optionsConfig: Effect.Effect<DiscoveryOptions, ConfigError.ConfigError | EtcdConfigError> = Effect.map(
  Effect.all([requiredEtcdClientConfig, namespaceSetting]),
  ([etcd, namespace]) => ({ ...etcd, namespace })
)

/** `layer` from the configuration alone. */
export const layerConfig: Layer.Layer<ServiceDiscovery, ConfigError.ConfigError | EtcdConfigError> = Layer.unwrapEffect(
  Effect.map(optionsConfig, layer)
)

