import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Layer, Scope, Stream, SubscriptionRef } from "effect"
import { afterAll, beforeAll } from "vitest"
import type { DiscoveredInstance } from "../../src/adapters/etcd/Discovery.js"
import { watchService } from "../../src/adapters/etcd/Discovery.js"
import * as Registry from "../../src/adapters/etcd/Registry.js"
import type { EtcdProcess } from "../support/etcd.js"
import { startEtcd } from "../support/etcd.js"
import { adminClient, freshNamespace, quiet, waitFor } from "./helpers.js"

let etcd: EtcdProcess
beforeAll(async () => {
  etcd = await startEtcd()
})
afterAll(() => etcd.stop())

const instanceJson = (id: string, endpoint: string) =>
  JSON.stringify({ id, name: "logic-service", version: "1", metadata: {}, endpoints: [endpoint] })

const summary = (instances: ReadonlyArray<DiscoveredInstance>) => instances.map((i) => `${i.id}@${i.address}`)
const shows = (...expected: Array<string>) => Object.assign((instances: ReadonlyArray<DiscoveredInstance>) =>
  JSON.stringify(summary(instances)) === JSON.stringify(expected), { toString: () => `shows ${JSON.stringify(expected)}` })

describe("etcd discovery", () => {
  it.scopedLive("lists, then follows puts and deletes, skipping values that do not parse", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const prefix = `${namespace}/logic-service/`
      const admin = yield* adminClient(etcd.endpoint)
      yield* Effect.promise(() => admin.put(`${prefix}logic-a`).value(instanceJson("logic-a", "grpc://10.0.0.1:9000")))
      yield* Effect.promise(() => admin.put(`${namespace}/logic-service-other/x`).value(instanceJson("x", "10.9.9.9:1")))

      const instances = yield* watchService({ endpoints: [etcd.endpoint], namespace, serviceName: "logic-service" })
      const last = ["logic-a@10.0.0.1:9000", "logic-c@10.0.0.3:9002"]
      const history = yield* instances.changes.pipe(
        Stream.map(summary),
        Stream.takeUntil((seen) => JSON.stringify(seen) === JSON.stringify(last)),
        Stream.runCollect,
        Effect.fork
      )
      const listed = yield* waitFor(instances.changes, shows("logic-a@10.0.0.1:9000"))
      expect(listed[0].raw).toEqual({ id: "logic-a", name: "logic-service", version: "1", metadata: {}, endpoints: ["grpc://10.0.0.1:9000"] })

      yield* Effect.promise(() => admin.put(`${prefix}logic-b`).value(instanceJson("logic-b", "10.0.0.2:9001")))
      yield* waitFor(instances.changes, shows("logic-a@10.0.0.1:9000", "logic-b@10.0.0.2:9001"))

      yield* Effect.promise(() => admin.put(`${prefix}broken`).value("{not json"))
      yield* Effect.promise(() => admin.put(`${prefix}no-endpoint`).value(JSON.stringify({ id: "n", name: "logic-service", endpoints: [] })))
      yield* Effect.promise(() => admin.put(`${prefix}logic-c`).value(instanceJson("logic-c", "grpc://10.0.0.3:9002?isSecure=false")))
      // logic-c arriving after the bad values proves they were seen and skipped, in order.
      yield* waitFor(instances.changes, shows("logic-a@10.0.0.1:9000", "logic-b@10.0.0.2:9001", "logic-c@10.0.0.3:9002"))

      yield* Effect.promise(() => admin.put(`${prefix}logic-a`).value("garbage"))
      yield* waitFor(instances.changes, shows("logic-b@10.0.0.2:9001", "logic-c@10.0.0.3:9002"))

      yield* Effect.promise(() => admin.delete().key(`${prefix}logic-b`))
      yield* waitFor(instances.changes, shows("logic-c@10.0.0.3:9002"))
      yield* Effect.promise(() => admin.delete().key(`${prefix}broken`))
      yield* Effect.promise(() => admin.put(`${prefix}logic-a`).value(instanceJson("logic-a", "grpc://10.0.0.1:9000")))
      yield* waitFor(instances.changes, shows(...last))

      // Every change published once, and nothing for values that were skipped or unchanged.
      const seen = Chunk.toArray(yield* Fiber.join(history)).filter((set) => set.length > 0)
      expect(seen).toEqual([
        ["logic-a@10.0.0.1:9000"],
        ["logic-a@10.0.0.1:9000", "logic-b@10.0.0.2:9001"],
        ["logic-a@10.0.0.1:9000", "logic-b@10.0.0.2:9001", "logic-c@10.0.0.3:9002"],
        ["logic-b@10.0.0.2:9001", "logic-c@10.0.0.3:9002"],
        ["logic-c@10.0.0.3:9002"],
        last
      ])
    }).pipe(quiet))

  it.scopedLive("sees a registry registration come and go", () =>
    Effect.gen(function*() {
      const namespace = freshNamespace()
      const instances = yield* watchService({ endpoints: [etcd.endpoint], namespace, serviceName: "gateway-service" })
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(
        Registry.layer({
          endpoints: [etcd.endpoint],
          namespace,
          serviceName: "gateway-service",
          version: "1",
          ttlSeconds: 3,
          metadata: {},
          grpcEndpoint: "grpc://127.0.0.1:15091"
        }),
        scope
      )
      yield* waitFor(instances.changes, shows("gateway-service-001@127.0.0.1:15091"))
      yield* Scope.close(scope, Exit.void)
      yield* waitFor(instances.changes, shows())
    }).pipe(quiet))

  it.scopedLive("re-lists after etcd restarts with an empty data dir", () =>
    Effect.gen(function*() {
      const own = yield* Effect.acquireRelease(Effect.promise(() => startEtcd()), (e) => Effect.promise(() => e.stop()))
      const admin = yield* adminClient(own.endpoint)
      const prefix = "/resonance/services/logic-service/"
      yield* Effect.promise(() => admin.put(`${prefix}logic-1`).value(instanceJson("logic-1", "10.0.0.1:1")))
      const instances = yield* watchService({ endpoints: [own.endpoint], serviceName: "logic-service" })
      yield* waitFor(instances.changes, shows("logic-1@10.0.0.1:1"))

      yield* Effect.promise(() => own.restart({ wipe: true }))
      yield* waitFor(instances.changes, shows())
      yield* Effect.promise(() => admin.put(`${prefix}logic-2`).value(instanceJson("logic-2", "10.0.0.2:2")))
      yield* waitFor(instances.changes, shows("logic-2@10.0.0.2:2"))
    }).pipe(quiet), 30_000)

  it.scopedLive("starts empty while etcd is down and fills in once it is up", () =>
    Effect.gen(function*() {
      const own = yield* Effect.acquireRelease(Effect.promise(() => startEtcd({ start: false })), (e) => Effect.promise(() => e.stop()))
      const instances = yield* watchService({ endpoints: [own.endpoint], serviceName: "logic-service" })
      expect(yield* SubscriptionRef.get(instances)).toEqual([])

      yield* Effect.promise(() => own.restart())
      const admin = yield* adminClient(own.endpoint)
      yield* Effect.promise(() => admin.put("/resonance/services/logic-service/logic-1").value(instanceJson("logic-1", "grpc://10.0.0.1:1")))
      yield* waitFor(instances.changes, shows("logic-1@10.0.0.1:1"))
    }).pipe(quiet), 30_000)
})
