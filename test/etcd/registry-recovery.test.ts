import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as Registry from "../../src/adapters/etcd/Registry.js"
import type { RegistryOptions } from "../../src/adapters/etcd/Registry.js"
import { ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import { startEtcd } from "../support/etcd.js"
import { adminClient, buildService, eventually, quiet, waitFor } from "./helpers.js"

const options = (endpoint: string): RegistryOptions => ({
  endpoints: [endpoint],
  serviceName: "gateway-service",
  version: "1.0.0",
  ttlSeconds: 2,
  metadata: { http_addr: "127.0.0.1:8080", ws_addr: "127.0.0.1:8080" },
  grpcEndpoint: "grpc://127.0.0.1:15091"
})

describe("etcd registry recovery", () => {
  it.scopedLive("re-registers with the same id after etcd restarts with an empty data dir", () =>
    Effect.gen(function*() {
      const etcd = yield* Effect.acquireRelease(Effect.promise(() => startEtcd()), (e) => Effect.promise(() => e.stop()))
      const registration = yield* buildService(ServiceRegistration, Registry.layer(options(etcd.endpoint)))
      const key = yield* registration.key
      expect(key).toBe("/resonance/services/gateway-service/gateway-service-001")
      const before = yield* registration.state

      yield* Effect.promise(() => etcd.restart({ wipe: true }))
      const admin = yield* adminClient(etcd.endpoint)
      // The new etcd knows nothing of us until the registry notices and registers again.
      const stored = yield* eventually(() => admin.get(key).exec(), (response) => response.kvs.length === 1)
      expect(JSON.parse(stored.kvs[0].value.toString()).id).toBe("gateway-service-001")
      const after = yield* waitFor(registration.changes, (state) => state.status === "registered" && !Option.getEquivalence((a: string, b: string) => a === b)(state.leaseId, before.leaseId))
      expect(Option.getOrThrow(after.instanceId)).toBe("gateway-service-001")
      expect(stored.kvs[0].lease).toBe(Option.getOrThrow(after.leaseId))
    }).pipe(quiet), 30_000)

  it.scopedLive("builds with etcd down, serves a fallback identity, and registers once etcd starts", () =>
    Effect.gen(function*() {
      const etcd = yield* Effect.acquireRelease(Effect.promise(() => startEtcd({ start: false })), (e) => Effect.promise(() => e.stop()))
      const context = yield* Layer.build(
        Registry.layer({ ...options(etcd.endpoint), startupWait: "300 millis", retry: undefined })
      )
      const registration = yield* Effect.provide(ServiceRegistration, Layer.succeedContext(context))
      const identity = yield* Effect.provide(GatewayIdentity, Layer.succeedContext(context))
      expect(yield* registration.status).toBe("reconnecting")
      expect(registration.currentInstanceId()).toBeUndefined()
      expect(identity.id).toBe(Registry.fallbackGatewayId("gateway-service"))

      yield* Effect.promise(() => etcd.restart())
      const instanceId = yield* registration.instanceId.pipe(Effect.timeout("15 seconds"))
      expect(instanceId).toBe("gateway-service-001")
      expect(yield* registration.status).toBe("registered")
      expect(identity.id).toBe("gateway-service-001")
      const admin = yield* adminClient(etcd.endpoint)
      const value = yield* Effect.promise(() => admin.get("/resonance/services/gateway-service/gateway-service-001").json())
      expect(value).toEqual({
        id: "gateway-service-001",
        name: "gateway-service",
        version: "1.0.0",
        metadata: { http_addr: "127.0.0.1:8080", ws_addr: "127.0.0.1:8080" },
        endpoints: ["grpc://127.0.0.1:15091"]
      })
    }).pipe(quiet), 30_000)
  it.scopedLive("rides out a short etcd crash and, after a long one, reclaims its id from the lease etcd kept", () =>
    Effect.gen(function*() {
      const etcd = yield* Effect.acquireRelease(Effect.promise(() => startEtcd()), (e) => Effect.promise(() => e.stop()))
      const registration = yield* buildService(ServiceRegistration, Registry.layer(options(etcd.endpoint)))
      const key = yield* registration.key
      const admin = yield* adminClient(etcd.endpoint)
      const keys = () => admin.getAll().prefix("/resonance/services/gateway-service/").keys()

      etcd.kill()
      yield* Effect.promise(() => etcd.restart())
      yield* waitFor(registration.changes, (state) => state.status === "registered")
      expect(yield* eventually(keys, (all) => all.length === 1)).toEqual([key])

      etcd.kill()
      // Past twice the TTL without etcd, the client gives the lease up...
      const lost = yield* waitFor(registration.changes, (state) => Option.isNone(state.leaseId))
      expect(lost.status).toBe("reconnecting")
      // ...while etcd, restarted with its data, revives it: its key must not push us to -002.
      yield* Effect.promise(() => etcd.restart())
      const after = yield* waitFor(registration.changes, (state) => state.status === "registered")
      expect(Option.getOrThrow(after.instanceId)).toBe("gateway-service-001")
      const stored = yield* eventually(() => admin.get(key).exec(), (response) => response.kvs[0]?.lease === Option.getOrThrow(after.leaseId))
      expect(stored.kvs).toHaveLength(1)
      expect(yield* Effect.promise(keys)).toEqual([key])
    }).pipe(quiet), 30_000)
})
