import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import type { FrontDoorOptions } from "../../src/adapters/platform/net/FrontDoor.js"

/**
 * Provides a roomy front door that lives as long as the enclosing scope, not only as long as
 * `effect` runs (as `Effect.provide(layer)` would): servers started by `effect` outlive it.
 */
export const withFrontDoor = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: Partial<FrontDoorOptions> = {}
): Effect.Effect<A, E, Exclude<R, FrontDoor.FrontDoor> | Scope.Scope> =>
  Effect.flatMap(Layer.build(FrontDoor.layerTest(options)), (context) => Effect.provide(effect, context))
