import { Context, Effect, Layer, SubscriptionRef } from "effect"
import type { Scope } from "effect"

export interface ServiceDiscoveryShape {
  readonly addresses: (
    serviceName: string
  ) => Effect.Effect<SubscriptionRef.SubscriptionRef<ReadonlyArray<string>>, never, Scope.Scope>
}

/** Where the live instances of a service are: their `host:port` addresses, changing over time. */
export class ServiceDiscovery extends Context.Tag("resonance/ServiceDiscovery")<ServiceDiscovery, ServiceDiscoveryShape>() {
  /** Fixed addresses by service name (none for a service not listed); a test changes them through the refs. */
  static readonly layerTest = (
    services: Readonly<Record<string, ReadonlyArray<string>>>
  ): Layer.Layer<ServiceDiscovery> =>
    Layer.effect(
      ServiceDiscovery,
      Effect.gen(function*() {
        const refs = new Map<string, SubscriptionRef.SubscriptionRef<ReadonlyArray<string>>>()
        for (const [name, addresses] of Object.entries(services)) refs.set(name, yield* SubscriptionRef.make(addresses))
        return {
          addresses: (serviceName: string) =>
            Effect.suspend(() => {
              const known = refs.get(serviceName)
              if (known !== undefined) return Effect.succeed(known)
              return Effect.tap(SubscriptionRef.make<ReadonlyArray<string>>([]), (ref) => Effect.sync(() => refs.set(serviceName, ref)))
            })
        }
      })
    )
}
