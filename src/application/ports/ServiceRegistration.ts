import { Context, Effect, Layer, Option, Stream, SubscriptionRef } from "effect"

export type RegistrationStatus = "registered" | "reconnecting" | "deregistered"

export interface RegistrationState {
  readonly status: RegistrationStatus
  /** The claimed id; `None` until the registry answered once. Kept while reconnecting. */
  readonly instanceId: Option.Option<string>
  readonly key: Option.Option<string>
  /** The lease holding the key (decimal string); `None` while not registered. */
  readonly leaseId: Option.Option<string>
}

export interface ServiceRegistrationShape {
  readonly serviceName: string
  /** The instance id; waits for the first claim when the registry has not answered yet. */
  readonly instanceId: Effect.Effect<string>
  /** `<namespace>/<service-name>/<instance-id>`; waits like `instanceId`. */
  readonly key: Effect.Effect<string>
  readonly status: Effect.Effect<RegistrationStatus>
  readonly state: Effect.Effect<RegistrationState>
  /** The current state, then every change. */
  readonly changes: Stream.Stream<RegistrationState>
  /** Plain read of the claimed id for synchronous callers; `undefined` before the first claim. */
  readonly currentInstanceId: () => string | undefined
  /**
   * Leaves the registry now, before the rest of shutdown (e.g. ahead of a connection drain): stops
   * re-registering and gives the entry up. Idempotent; the layer's release does the same.
   */
  readonly deregister: Effect.Effect<void>
}

export interface ServiceRegistrationTestOptions {
  /** Default `gateway-service`. */
  readonly serviceName?: string
  /** Registered under this id; default `<service-name>-001`. */
  readonly instanceId?: string
  /** The test's own state, to drive `changes` (a lost lease, a new claim); replaces `instanceId`. */
  readonly state?: SubscriptionRef.SubscriptionRef<RegistrationState>
}

/** The registered state of `instanceId` under the WIRE.md namespace, as a test starts from. */
export const registeredState = (serviceName: string, instanceId: string, leaseId = "1"): RegistrationState => ({
  status: "registered",
  instanceId: Option.some(instanceId),
  key: Option.some(`/resonance/services/${serviceName}/${instanceId}`),
  leaseId: Option.some(leaseId)
})

/**
 * This process's entry in the service registry (WIRE.md: the gateway's, found by the Task service;
 * the reference Logic's, found by gateways). Its layers never fail for want of the registry: they
 * start "reconnecting" and register in the background once it answers.
 */
export class ServiceRegistration extends Context.Tag("resonance/ServiceRegistration")<
  ServiceRegistration,
  ServiceRegistrationShape
>() {
  /**
   * Registered at once (or as `state` says, changing when the test sets it); `deregister` turns the
   * state "deregistered" once, later calls changing nothing, so a test reads it from `status`.
   */
  static readonly layerTest = (options: ServiceRegistrationTestOptions = {}): Layer.Layer<ServiceRegistration> =>
    Layer.effect(
      ServiceRegistration,
      Effect.gen(function*() {
        const serviceName = options.serviceName ?? "gateway-service"
        const state = options.state ??
          (yield* SubscriptionRef.make(registeredState(serviceName, options.instanceId ?? `${serviceName}-001`)))
        const firstSome = (pick: (current: RegistrationState) => Option.Option<string>) =>
          state.changes.pipe(Stream.filterMap(pick), Stream.runHead, Effect.map(Option.getOrThrow))
        let deregistered = false
        return {
          serviceName,
          instanceId: firstSome((current) => current.instanceId),
          key: firstSome((current) => current.key),
          status: Effect.map(SubscriptionRef.get(state), (current) => current.status),
          state: SubscriptionRef.get(state),
          changes: state.changes,
          currentInstanceId: () => Option.getOrUndefined(Effect.runSync(SubscriptionRef.get(state)).instanceId),
          deregister: Effect.suspend(() => {
            if (deregistered) return Effect.void
            deregistered = true
            return SubscriptionRef.update(state, (current): RegistrationState => ({
              ...current,
              status: "deregistered",
              leaseId: Option.none()
            }))
          })
        }
      })
    )
}
