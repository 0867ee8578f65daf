import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as DrainGate from "../../src/application/DrainGate.js"
import { ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import { Readiness } from "../../src/application/Readiness.js"

describe("the drain gate", () => {
  it.effect("ready once built; on release not ready, draining, and the registry entry revoked first", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        DrainGate.layer.pipe(Layer.provideMerge(Layer.merge(Readiness.layer, ServiceRegistration.layerTest({ instanceId: "gateway-service-001" })))),
        scope
      )
      const readiness = Context.get(context, Readiness)
      const registration = Context.get(context, ServiceRegistration)
      expect(readiness.isReady()).toBe(true)
      expect(yield* registration.status).toBe("registered")
      yield* Scope.close(scope, Exit.void)
      expect(readiness.isReady()).toBe(false)
      expect(readiness.isDraining()).toBe(true)
      expect(yield* registration.status).toBe("deregistered")
    }))

  it.effect("without a registry (embedded mode) it only turns readiness", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(DrainGate.layer.pipe(Layer.provideMerge(Readiness.layer)), scope)
      const readiness = Context.get(context, Readiness)
      expect(readiness.isReady()).toBe(true)
      yield* Scope.close(scope, Exit.void)
      expect(readiness.isDraining()).toBe(true)
    }))
})
