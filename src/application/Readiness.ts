import { Context, Effect, Layer } from "effect"

export interface ReadinessShape {
  readonly isReady: () => boolean
  readonly isDraining: () => boolean
  readonly markReady: Effect.Effect<void>
  readonly markDraining: Effect.Effect<void>
}

/** Ready once every Layer is up; not ready again from the moment the drain starts. */
export class Readiness extends Context.Tag("resonance/Readiness")<Readiness, ReadinessShape>() {
  static readonly layer: Layer.Layer<Readiness> = Layer.sync(Readiness, () => {
    let ready = false
    let draining = false
    return {
      isReady: () => ready && !draining,
      isDraining: () => draining,
      markReady: Effect.sync(() => {
        ready = true
      }),
      markDraining: Effect.sync(() => {
        draining = true
      })
    }
  })
}
