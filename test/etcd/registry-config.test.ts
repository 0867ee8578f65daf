import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Exit, Layer, Option } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Registry from "../../src/adapters/etcd/Registry.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import { ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import type { EtcdProcess } from "../support/etcd.js"
import { startEtcd } from "../support/etcd.js"
import { adminClient, freshNamespace, quiet } from "./helpers.js"

let etcd: EtcdProcess
beforeAll(async () => {
  etcd = await startEtcd()
})
afterAll(() => etcd.stop())

/** Builds `Registry.layerConfig(registrant)` into the test's scope, reading nothing but `settings`. */
const fromConfiguration = (registrant: Registry.Registrant, settings: object) =>
  Layer.build(Registry.layerConfig(registrant)).pipe(Effect.withConfigProvider(ConfigProvider.fromJson(settings)))

const leaseTtl = (admin: Effect.Effect.Success<ReturnType<typeof adminClient>>, leaseId: string) =>
  Effect.promise(() => admin.leaseClient.leaseTimeToLive({ ID: leaseId })).pipe(Effect.map((lease) => Number(lease.grantedTTL)))

describe("Registry.layerConfig: the entries from configuration alone", () => {
  it.scopedLive("the gateway registers http_addr, ws_addr and its Push endpoint on service.host, named by its claim from the start", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const context = yield* fromConfiguration("gateway", {
        service: { name: "gateway-service", version: "2.4.0", host: "10.1.2.3", http_port: 8081, grpc_port: 15092 },
        registry: { namespace, default_ttl: "7s" },
        etcd: { endpoints: [etcd.endpoint] }
      })
      // Building waited for the claim: the identity is already the id etcd holds.
      expect(Context.get(context, GatewayIdentity).id).toBe("gateway-service-001")
      const registration = Context.get(context, ServiceRegistration)
      const key = `${namespace}/gateway-service/gateway-service-001`
      expect(yield* registration.key).toBe(key)
      expect(yield* Effect.promise(() => admin.get(key).string())).toBe(
        "{\"id\":\"gateway-service-001\",\"name\":\"gateway-service\",\"version\":\"2.4.0\"," +
          "\"metadata\":{\"http_addr\":\"10.1.2.3:8081\",\"ws_addr\":\"10.1.2.3:8081\"},\"endpoints\":[\"grpc://10.1.2.3:15092\"]}"
      )
      const state = yield* registration.state
      expect(yield* leaseTtl(admin, Option.getOrThrow(state.leaseId))).toBe(7)
    }).pipe(quiet))

  it.scopedLive("the reference Logic registers no metadata, only grpc://service.host:service.grpc_port; an empty host is localhost", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const context = yield* fromConfiguration("logic", {
        service: { name: "logic-service", host: "  ", http_port: 8081, grpc_port: 15090 },
        registry: { namespace },
        etcd: { endpoints: [etcd.endpoint] }
      })
      const registration = Context.get(context, ServiceRegistration)
      expect(yield* registration.instanceId.pipe(Effect.timeout("10 seconds"))).toBe("logic-service-001")
      const key = `${namespace}/logic-service/logic-service-001`
      expect(yield* Effect.promise(() => admin.get(key).string())).toBe(
        "{\"id\":\"logic-service-001\",\"name\":\"logic-service\",\"version\":\"0.1.0\"," +
          "\"metadata\":{},\"endpoints\":[\"grpc://localhost:15090\"]}"
      )
      // registry.default_ttl defaults to upstream's 30 s.
      expect(yield* leaseTtl(admin, Option.getOrThrow((yield* registration.state).leaseId))).toBe(30)
    }).pipe(quiet))

  it.scopedLive("without etcd.endpoints the layer refuses to build, naming the key", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(fromConfiguration("gateway", { service: { host: "10.1.2.3" } }))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain("etcd.endpoints is empty")
    }).pipe(quiet))
})
