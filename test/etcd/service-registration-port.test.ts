import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, SubscriptionRef } from "effect"
import { registeredState, ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import type { RegistrationState } from "../../src/application/ports/ServiceRegistration.js"

describe("ServiceRegistration.layerTest", () => {
  it.effect("is registered under the given id, and deregister acts once", () =>
    Effect.gen(function*() {
      const registration = yield* ServiceRegistration
      expect(yield* registration.instanceId).toBe("gateway-service-007")
      expect(yield* registration.key).toBe("/resonance/services/gateway-service/gateway-service-007")
      expect(registration.currentInstanceId()).toBe("gateway-service-007")
      expect(yield* registration.status).toBe("registered")

      yield* registration.deregister
      const left = yield* registration.state
      expect(left.status).toBe("deregistered")
      expect(Option.isNone(left.leaseId)).toBe(true)
      // The id stays known after leaving, as the etcd adapter keeps it.
      expect(registration.currentInstanceId()).toBe("gateway-service-007")
    }).pipe(Effect.provide(ServiceRegistration.layerTest({ instanceId: "gateway-service-007" }))))

  it.effect("follows a state the test drives: waits for the first claim, and a second deregister changes nothing", () =>
    Effect.gen(function*() {
      const state = yield* SubscriptionRef.make<RegistrationState>({
        status: "reconnecting",
        instanceId: Option.none(),
        key: Option.none(),
        leaseId: Option.none()
      })
      yield* Effect.gen(function*() {
        const registration = yield* ServiceRegistration
        expect(registration.serviceName).toBe("logic-service")
        expect(registration.currentInstanceId()).toBeUndefined()
        const claim = yield* Effect.fork(registration.instanceId)
        yield* Effect.yieldNow()
        expect(claim.unsafePoll()).toBeNull()

        yield* SubscriptionRef.set(state, registeredState("logic-service", "logic-service-003", "42"))
        expect(yield* Fiber.join(claim)).toBe("logic-service-003")
        expect(registration.currentInstanceId()).toBe("logic-service-003")

        yield* registration.deregister
        expect(yield* registration.status).toBe("deregistered")
        // Registered again behind its back (as a test may drive it): a second deregister must not act.
        yield* SubscriptionRef.set(state, registeredState("logic-service", "logic-service-003", "43"))
        yield* registration.deregister
        expect(yield* registration.status).toBe("registered")
      }).pipe(Effect.provide(ServiceRegistration.layerTest({ serviceName: "logic-service", state })))
    }))
})
