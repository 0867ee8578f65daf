import { Effect, Layer, Option } from "effect"
import { ServiceRegistration } from "./ports/ServiceRegistration.js"
import { Readiness } from "./Readiness.js"

/**
 * The gateway's first step of a shutdown, built last and so released first: readiness turns
 * false and the registry entry (when there is one) is revoked before the WebSocket drain starts,
 * so load balancers and the Task service stop sending here while clients are still served.
 */
export const layer: Layer.Layer<never, never, Readiness> = Layer.scopedDiscard(
  Effect.gen(function*() {
    const readiness = yield* Readiness
    const registration = yield* Effect.serviceOption(ServiceRegistration)
    yield* Effect.acquireRelease(
      Effect.zipRight(readiness.markReady, Effect.logInfo("gateway ready")),
      () =>
        readiness.markDraining.pipe(
          Effect.zipRight(Effect.logInfo("draining")),
          Effect.zipRight(Option.match(registration, { onNone: () => Effect.void, onSome: (r) => r.deregister }))
        )
    )
  })
)
