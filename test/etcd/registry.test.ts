import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Scope } from "effect"
import type { Etcd3 } from "etcd3"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll } from "vitest"
import { etcdCall } from "../../src/adapters/etcd/Client.js"
import { loadEtcd3, makeEtcdClient } from "../../src/adapters/etcd/Client.js"
import type { RegistryOptions } from "../../src/adapters/etcd/Registry.js"
import * as Registry from "../../src/adapters/etcd/Registry.js"
import { ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import type { EtcdProcess } from "../support/etcd.js"
import { startEtcd } from "../support/etcd.js"
import { adminClient, buildService, eventually, freshNamespace, quiet, waitFor } from "./helpers.js"

let etcd: EtcdProcess
beforeAll(async () => {
  etcd = await startEtcd()
})
afterAll(() => etcd.stop())

const gatewayOptions = (namespace: string, overrides: Partial<RegistryOptions> = {}): RegistryOptions => ({
  endpoints: [etcd.endpoint],
  namespace,
  serviceName: "gateway-service",
  version: "1.2.3",
  ttlSeconds: 3,
  metadata: { http_addr: "10.1.2.3:8080", ws_addr: "10.1.2.3:8080" },
  grpcEndpoint: "grpc://10.1.2.3:15091",
  ...overrides
})

/** Builds a registration in its own scope, so a test can release it before the test ends. */
const register = (options: RegistryOptions) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Registry.layer(options), scope)
    return { scope, service: Context.get(context, ServiceRegistration) }
  })

const valueOf = (client: Etcd3, key: string) => Effect.promise(() => client.get(key).string())

describe("etcd registry", () => {
  it.scopedLive("registers the exact WIRE.md JSON under <namespace>/<service>/<service>-001, on a lease", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const registration = yield* buildService(ServiceRegistration, Registry.layer(gatewayOptions(namespace)))
      const instanceId = yield* registration.instanceId
      expect(instanceId).toBe("gateway-service-001")
      const key = yield* registration.key
      expect(key).toBe(`${namespace}/gateway-service/gateway-service-001`)
      expect(yield* valueOf(admin, key)).toBe(
        "{\"id\":\"gateway-service-001\",\"name\":\"gateway-service\",\"version\":\"1.2.3\"," +
          "\"metadata\":{\"http_addr\":\"10.1.2.3:8080\",\"ws_addr\":\"10.1.2.3:8080\"},\"endpoints\":[\"grpc://10.1.2.3:15091\"]}"
      )
      const state = yield* registration.state
      expect(state.status).toBe("registered")
      const stored = yield* Effect.promise(() => admin.get(key).exec())
      expect(stored.kvs[0].lease).toBe(Option.getOrThrow(state.leaseId))
      expect(stored.kvs[0].lease).not.toBe("0")
    }).pipe(quiet))

  it.scopedLive("numbers instances 001, 002, revokes on release and reuses the lowest free number", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      // Registration runs in the background: wait for each before starting the next.
      const first = yield* register(gatewayOptions(namespace))
      expect(yield* first.service.instanceId).toBe("gateway-service-001")
      const second = yield* register(gatewayOptions(namespace))
      expect(yield* second.service.instanceId).toBe("gateway-service-002")
      const firstKey = yield* first.service.key
      expect(yield* valueOf(admin, firstKey)).not.toBeNull()

      yield* Scope.close(first.scope, Exit.void)
      // Gone at once, not after the TTL: release revoked the lease.
      expect(yield* valueOf(admin, firstKey)).toBeNull()

      const third = yield* register(gatewayOptions(namespace))
      expect(yield* third.service.instanceId).toBe("gateway-service-001")
      yield* Scope.close(second.scope, Exit.void)
      yield* Scope.close(third.scope, Exit.void)
      expect(yield* Effect.promise(() => admin.getAll().prefix(`${namespace}/`).keys())).toEqual([])
    }).pipe(quiet))

  it.scopedLive("concurrent claims never get the same id, and a free preferred id is kept", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const client = yield* Effect.acquireRelease(Effect.map(loadEtcd3, (etcd3) => makeEtcdClient(etcd3, { endpoints: [etcd.endpoint] })), (c) => Effect.sync(() => c.close()))
      const lease = client.lease(10)
      yield* Effect.addFinalizer(() => Effect.promise(() => lease.revoke()))
      const leaseId = yield* etcdCall("grant", () => lease.grant())
      const claim = (preferred?: string) => Registry.claimInstanceId(client, namespace, "svc", leaseId, (id) => JSON.stringify({ id }), preferred)

      const ids = yield* Effect.all(Array.from({ length: 6 }, () => claim()), { concurrency: "unbounded" })
      expect([...ids].sort()).toEqual(["svc-001", "svc-002", "svc-003", "svc-004", "svc-005", "svc-006"])
      expect(yield* claim("svc-042")).toBe("svc-042")
      expect(yield* claim("svc-003")).toBe("svc-007")
      expect(yield* Effect.promise(() => client.get(`${namespace}/svc/svc-042`).string())).toBe("{\"id\":\"svc-042\"}")
    }).pipe(quiet))

  it.scopedLive("the key of a killed process disappears once its lease TTL runs out", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const fixture = fileURLToPath(new URL("./fixtures/register-forever.ts", import.meta.url))
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => spawn(process.execPath, ["--import", "tsx", fixture, etcd.endpoint, namespace], { stdio: ["pipe", "pipe", "inherit"] })),
        (proc) => Effect.sync(() => proc.kill("SIGKILL"))
      )
      const instanceId = yield* Effect.async<string, Error>((resume) => {
        let out = ""
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString()
          const match = /REGISTERED (\S+)/.exec(out)
          if (match) resume(Effect.succeed(match[1]))
        })
        child.once("exit", (code) => resume(Effect.fail(new Error(`fixture exited with ${code}: ${out}`))))
      }).pipe(Effect.timeout("15 seconds"))
      const key = `${namespace}/gateway-service/${instanceId}`
      expect(yield* valueOf(admin, key)).not.toBeNull()

      child.kill("SIGKILL")
      // No revoke happened, so only the 2 s TTL can remove it.
      expect(yield* valueOf(admin, key)).not.toBeNull()
      yield* eventually(() => admin.get(key).string(), (value) => value === null, 8_000)
    }).pipe(quiet), 30_000)

  it.scopedLive("a lease revoked behind its back is replaced, keeping the same instance id", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const registration = yield* buildService(ServiceRegistration, Registry.layer(gatewayOptions(namespace, { ttlSeconds: 2 })))
      const key = yield* registration.key
      const before = yield* registration.state
      const oldLease = Option.getOrThrow(before.leaseId)

      yield* Effect.promise(() => admin.leaseClient.leaseRevoke({ ID: oldLease }))
      expect(yield* valueOf(admin, key)).toBeNull()

      const after = yield* waitFor(
        registration.changes,
        (state) => state.status === "registered" && Option.isSome(state.leaseId) && state.leaseId.value !== oldLease
      )
      expect(Option.getOrThrow(after.instanceId)).toBe("gateway-service-001")
      const stored = yield* eventually(() => admin.get(key).exec(), (response) => response.kvs.length === 1)
      expect(stored.kvs[0].lease).toBe(Option.getOrThrow(after.leaseId))
    }).pipe(quiet))

  it.scopedLive("the gateway identity is the claimed instance id once building waited for the claim", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const identity = yield* buildService(
        GatewayIdentity,
        Registry.layer(gatewayOptions(namespace, { startupWait: "3 seconds" }))
      )
      expect(identity.id).toBe("gateway-service-001")
    }).pipe(quiet))
  it.scopedLive("deregister leaves the registry at once and for good, ahead of the layer's release", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const admin = yield* adminClient(etcd.endpoint)
      const leaving = yield* buildService(ServiceRegistration, Registry.layer(gatewayOptions(namespace)))
      const key = yield* leaving.key
      yield* leaving.deregister
      expect(yield* valueOf(admin, key)).toBeNull()
      expect(yield* leaving.status).toBe("deregistered")

      const next = yield* buildService(ServiceRegistration, Registry.layer(gatewayOptions(namespace)))
      expect(yield* next.instanceId).toBe("gateway-service-001")
      yield* leaving.deregister
      expect(yield* valueOf(admin, key)).not.toBeNull()
      expect(yield* leaving.status).toBe("deregistered")
    }).pipe(quiet))
})
