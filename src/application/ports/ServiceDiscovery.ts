import { Context } from "effect"
import type { Effect, Scope, SubscriptionRef } from "effect"

/** Where the live instances of a service are: their `host:port` addresses, changing over time. */
export class ServiceDiscovery extends Context.Tag("resonance/ServiceDiscovery")<
  ServiceDiscovery,
  {
    readonly addresses: (
      serviceName: string
    ) => Effect.Effect<SubscriptionRef.SubscriptionRef<ReadonlyArray<string>>, never, Scope.Scope>
  }
>() {}
