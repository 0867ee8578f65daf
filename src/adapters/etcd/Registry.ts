import { Config, Context, Deferred, Duration, Effect, Fiber, Layer, Option, Queue, Schedule, Stream, SubscriptionRef } from "effect"
import type { ConfigError, Scope } from "effect"
import type { Etcd3, Lease } from "etcd3"
import * as Os from "node:os"
import { GatewayIdentity } from "../../application/ports/GatewayIdentity.js"
import { ServiceRegistration } from "../../application/ports/ServiceRegistration.js"
import type { RegistrationState, RegistrationStatus, ServiceRegistrationShape } from "../../application/ports/ServiceRegistration.js"
import { duration, serviceSettings } from "../platform/config/Settings.js"
import { acquireEtcdClient, etcdCall, EtcdError, requiredEtcdClientConfig } from "./Client.js"
import type { EtcdClientOptions, EtcdConfigError } from "./Client.js"
import { defaultNamespace, encodeServiceInstance, instanceKey, namespaceSetting, servicePrefix } from "./ServiceInstance.js"

export interface RegistryOptions extends EtcdClientOptions {
  /** Default `/resonance/services`. */
  readonly namespace?: string
  readonly serviceName: string
  readonly version: string
  readonly ttlSeconds: number
  /** e.g. `{ http_addr: "host:port", ws_addr: "host:port" }` */
  readonly metadata: Readonly<Record<string, string>>
  /** `grpc://host:port` of the Push server. */
  readonly grpcEndpoint: string
  /** Pause between failed registration attempts; default exponential from 200 ms, capped at 5 s. */
  readonly retry?: Schedule.Schedule<unknown, EtcdError>
  /**
   * How long building the layer waits for the first claim, so that `GatewayIdentity` starts as the
   * claimed id, before going on with the fallback id and registering in the background. Default: no wait.
   */
  readonly startupWait?: Duration.DurationInput
  /** The `GatewayIdentity` until an id is claimed. Default `<service-name>-<hostname>-<pid>`. */
  readonly fallbackId?: string
  /** Bound on revoking the lease at shutdown. Default 3 s. */
  readonly releaseTimeout?: Duration.DurationInput
}

const defaultRetry: Schedule.Schedule<unknown, EtcdError> = Schedule.exponential("200 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.jittered
)

const formatInstanceId = (serviceName: string, n: number) => `${serviceName}-${String(n).padStart(3, "0")}`

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * Claims `<service-name>-<NNN>` (lowest free number from 001) by creating its key in one
 * transaction, only if absent, with the final value and the lease attached: the key is the claim,
 * no central allocator. A lost race moves on to the next number. `preferredId` is tried first,
 * so a re-registration keeps its id when it is still free.
 */
export const claimInstanceId = (
  client: Etcd3,
  namespace: string,
  serviceName: string,
  leaseId: string,
  valueOf: (instanceId: string) => string,
  preferredId?: string
): Effect.Effect<string, EtcdError> =>
  Effect.gen(function*() {
    const tryCreate = (instanceId: string) => {
      const key = instanceKey(namespace, serviceName, instanceId)
      return etcdCall("claim instance id", () =>
        client
          .if(key, "Create", "==", 0)
          .then(client.put(key).value(valueOf(instanceId)).lease(leaseId))
          .commit()).pipe(Effect.map((response) => response.succeeded))
    }
    if (preferredId !== undefined && (yield* tryCreate(preferredId))) return preferredId

    const prefix = servicePrefix(namespace, serviceName)
    const numbered = new RegExp(`^${escapeRegExp(serviceName)}-(\\d+)$`)
    const keys = yield* etcdCall("list instance ids", () => client.getAll().prefix(prefix).keys())
    const taken = new Set<number>()
    for (const key of keys) {
      const match = numbered.exec(key.slice(prefix.length))
      if (match) taken.add(Number(match[1]))
    }
    const maxAttempts = 1_000
    let n = 1
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      while (taken.has(n)) n++
      const instanceId = formatInstanceId(serviceName, n)
      if (yield* tryCreate(instanceId)) return instanceId
      taken.add(n)
    }
    return yield* new EtcdError({ reason: "NoFreeInstanceId", operation: "claim instance id" })
  })

type LeaseEvent =
  | { readonly _tag: "Lost"; readonly error: Error }
  | { readonly _tag: "KeepaliveFailed"; readonly error: Error }
  | { readonly _tag: "KeepaliveSucceeded" }

const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)))

const revokeQuietly = (lease: Lease, timeout: Duration.DurationInput) =>
  etcdCall("revoke lease", () => lease.revoke()).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new EtcdError({ reason: "Unavailable", operation: "revoke lease", cause: "timed out" })
    }),
    Effect.catchAll((error) => Effect.logWarning("could not revoke etcd lease", { error: error.message }))
  )

/**
 * Registers this process under `<namespace>/<service-name>/<service-name>-<NNN>` with a lease kept
 * alive by etcd3. A lost lease (etcd restarted empty, lease revoked, keepalive failing past the TTL)
 * is replaced in the background, keeping the same id when still free; retried forever with backoff.
 * Release revokes the lease, which deletes the key at once, then closes the client.
 */
const makeRegistration = (options: RegistryOptions): Effect.Effect<ServiceRegistrationShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const namespace = options.namespace ?? defaultNamespace
    const { serviceName } = options
    const retrySchedule = options.retry ?? defaultRetry
    const releaseTimeout = options.releaseTimeout ?? "3 seconds"
    const render = (instanceId: string) =>
      encodeServiceInstance({
        id: instanceId,
        name: serviceName,
        version: options.version,
        metadata: options.metadata,
        endpoints: [options.grpcEndpoint]
      })

    const client = yield* acquireEtcdClient(options)
    const state = yield* SubscriptionRef.make<RegistrationState>({
      status: "reconnecting",
      instanceId: Option.none(),
      key: Option.none(),
      leaseId: Option.none()
    })
    const firstClaim = yield* Deferred.make<string>()
    let claimedId: string | undefined
    let currentLease: Lease | undefined
    // A lease of a failed attempt or a lost one: revoked before the next claim, since etcd may
    // still hold it (restarted with its data) and its key would block our id.
    let staleLease: Lease | undefined

    const setStatus = (status: RegistrationStatus) => SubscriptionRef.update(state, (current): RegistrationState => ({ ...current, status }))

    const register = Effect.gen(function*() {
      if (staleLease) {
        const stale = staleLease
        yield* etcdCall("revoke previous lease", () => stale.revoke()).pipe(
          Effect.timeoutFail({
            duration: releaseTimeout,
            onTimeout: () => new EtcdError({ reason: "Unavailable", operation: "revoke previous lease", cause: "timed out" })
          })
        )
        staleLease = undefined
      }
      const events = yield* Queue.unbounded<LeaseEvent>()
      const lease = client.lease(options.ttlSeconds)
      currentLease = lease
      staleLease = lease
      lease.on("lost", (error) => events.unsafeOffer({ _tag: "Lost", error }))
      lease.on("keepaliveFailed", (error: unknown) => events.unsafeOffer({ _tag: "KeepaliveFailed", error: asError(error) }))
      lease.on("keepaliveSucceeded", () => events.unsafeOffer({ _tag: "KeepaliveSucceeded" }))
      const leaseId = yield* etcdCall("grant lease", () => lease.grant())
      const instanceId = yield* claimInstanceId(client, namespace, serviceName, leaseId, render, claimedId)
      staleLease = undefined
      const key = instanceKey(namespace, serviceName, instanceId)
      if (claimedId !== undefined && claimedId !== instanceId) {
        yield* Effect.logWarning("etcd instance id changed: the previous one was taken", { previous: claimedId, instanceId })
      }
      claimedId = instanceId
      yield* Deferred.succeed(firstClaim, instanceId)
      yield* SubscriptionRef.set<RegistrationState>(state, {
        status: "registered",
        instanceId: Option.some(instanceId),
        key: Option.some(key),
        leaseId: Option.some(leaseId)
      })
      yield* Effect.logInfo("registered in etcd", { key, leaseId, ttlSeconds: options.ttlSeconds })
      return { lease, events }
    })

    const untilLost = ({ events, lease }: { readonly lease: Lease; readonly events: Queue.Queue<LeaseEvent> }) =>
      Effect.gen(function*() {
        let healthy = true
        while (true) {
          const event = yield* Queue.take(events)
          switch (event._tag) {
            case "Lost":
              staleLease = lease
              yield* SubscriptionRef.update(state, (current): RegistrationState => ({ ...current, status: "reconnecting", leaseId: Option.none() }))
              yield* Effect.logWarning("etcd lease lost; registering again", { error: event.error.message })
              return
            case "KeepaliveFailed":
              if (healthy) {
                healthy = false
                yield* setStatus("reconnecting")
                yield* Effect.logWarning("etcd keepalive failing; the lease holds until its TTL", { error: event.error.message })
              }
              break
            case "KeepaliveSucceeded":
              if (!healthy) {
                healthy = true
                yield* setStatus("registered")
                yield* Effect.logInfo("etcd keepalive recovered")
              }
              break
          }
        }
      })

    const registerWithRetry = register.pipe(
      Effect.tapError((error) => Effect.logWarning("etcd registration failed; retrying", { error: error.message })),
      // Never give up, even when a caller's schedule ends.
      Effect.retry(Schedule.andThen(retrySchedule, defaultRetry))
    )

    const loop = yield* Effect.forkScoped(Effect.forever(Effect.flatMap(registerWithRetry, untilLost)))
    let deregistered = false
    const deregister = Effect.uninterruptible(
      Effect.suspend(() => {
        if (deregistered) return Effect.void
        deregistered = true
        return Fiber.interrupt(loop).pipe(
          Effect.zipRight(Effect.suspend(() => (currentLease ? revokeQuietly(currentLease, releaseTimeout) : Effect.void))),
          Effect.zipRight(SubscriptionRef.update(state, (current): RegistrationState => ({ ...current, status: "deregistered", leaseId: Option.none() }))),
          Effect.zipRight(Effect.logInfo("left the etcd registry", { instanceId: claimedId }))
        )
      })
    )
    // Runs before the client closes (acquired earlier, released later).
    yield* Effect.addFinalizer(() => deregister)

    const currentKey = (instanceId: string) => instanceKey(namespace, serviceName, instanceId)
    const instanceId = Effect.suspend(() => (claimedId !== undefined ? Effect.succeed(claimedId) : Deferred.await(firstClaim)))
    return {
      serviceName,
      instanceId,
      key: Effect.map(instanceId, currentKey),
      status: Effect.map(SubscriptionRef.get(state), (current) => current.status),
      state: SubscriptionRef.get(state),
      changes: state.changes,
      currentInstanceId: () => claimedId,
      deregister
    }
  })

export const fallbackGatewayId = (serviceName: string): string => `${serviceName}-${Os.hostname()}-${process.pid}`

/**
 * The identity read live from the registration: the claimed instance id (what the Task service
 * finds in etcd) as soon as there is one, `fallbackId` before that.
 */
const identityOf = (registration: ServiceRegistrationShape, fallbackId: string): Context.Tag.Service<GatewayIdentity> => {
  const current = () => registration.currentInstanceId() ?? fallbackId
  return {
    get id() {
      return current()
    },
    changes: Stream.suspend(() => {
      let last = current()
      return registration.changes.pipe(
        Stream.filterMap((state) => state.instanceId),
        Stream.filter((id) => {
          if (id === last) return false
          last = id
          return true
        })
      )
    })
  }
}

const awaitClaim = (registration: ServiceRegistrationShape, wait: Duration.DurationInput, fallbackId: string) =>
  registration.instanceId.pipe(
    Effect.timeout(wait),
    Effect.catchTag("TimeoutException", () =>
      Effect.logWarning("etcd not reachable at startup; serving under a fallback id and registering in the background", {
        fallbackId
      }))
  )

/**
 * This process's etcd entry (`ServiceRegistration`) and the identity it gives (`GatewayIdentity`).
 * Never fails for want of etcd: it starts "reconnecting" and registers once etcd answers.
 */
export const layer = (options: RegistryOptions): Layer.Layer<ServiceRegistration | GatewayIdentity> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const registration = yield* makeRegistration(options)
      const fallbackId = options.fallbackId ?? fallbackGatewayId(options.serviceName)
      if (options.startupWait !== undefined) yield* awaitClaim(registration, options.startupWait, fallbackId)
      return Context.make(ServiceRegistration, registration).pipe(
        Context.add(GatewayIdentity, identityOf(registration, fallbackId))
      )
    })
  )

/** `registry.*`: where entries live and how long one outlives its process. */
export const registrySettings = Config.all({
  namespace: namespaceSetting,
  defaultTtl: Config.nested(duration("default_ttl", "30s"), "registry")
})

/**
 * Who registers, the one thing telling the two entries apart: a gateway puts where clients reach it
 * in the metadata (`http_addr`, `ws_addr`) and waits up to 3 s for its claim at start, so that its
 * first SyncStatus already names it by the id etcd holds; the reference Logic registers its gRPC
 * endpoint only, with no metadata, and does not wait.
 */
export type Registrant = "gateway" | "logic"

/** Upstream's entry from `service.*`, `registry.*` and `etcd.*`, as `registrant` registers it. */
const optionsConfig = (registrant: Registrant): Effect.Effect<RegistryOptions, ConfigError.ConfigError | EtcdConfigError> =>
  Effect.gen(function*() {
    const etcd = yield* requiredEtcdClientConfig
    const registry = yield* registrySettings
    const service = yield* serviceSettings
    // The advertised host: `service.host` (whose default the configuration sources make $HOSTNAME),
    // trimmed and never "" (serviceSettings).
    const host = service.advertiseHost
    const http = `${host}:${service.httpPort}`
    const options: RegistryOptions = {
      ...etcd,
      namespace: registry.namespace,
      serviceName: service.name,
      version: service.version,
      ttlSeconds: Duration.toSeconds(registry.defaultTtl),
      metadata: {},
      grpcEndpoint: `grpc://${host}:${service.grpcPort}`
    }
    return registrant === "gateway"
      ? { ...options, metadata: { http_addr: http, ws_addr: http }, startupWait: "3 seconds" }
      : options
  })

/** `layer` from the configuration alone: the gateway's entry or the reference Logic's. */
export const layerConfig = (
  registrant: Registrant
): Layer.Layer<ServiceRegistration | GatewayIdentity, ConfigError.ConfigError | EtcdConfigError> =>
  Layer.unwrapEffect(Effect.map(optionsConfig(registrant), layer))
