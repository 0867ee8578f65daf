import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { Etcd3 } from "etcd3"
import * as Fs from "node:fs"
import { etcdSecurity } from "../../src/adapters/etcd/Client.js"
import { watchService } from "../../src/adapters/etcd/Discovery.js"
import * as Registry from "../../src/adapters/etcd/Registry.js"
import { ServiceRegistration } from "../../src/application/ports/ServiceRegistration.js"
import { enableEtcdAuth, startEtcd } from "../support/etcd.js"
import { makePki } from "../support/tls.js"
import { buildService, eventually, freshNamespace, quiet } from "./helpers.js"

const pki = makePki("etcd")
afterAll(() => pki.remove())

const registration = (endpoint: string, namespace: string, security: Awaited<ReturnType<typeof settingsOf>>) =>
  Registry.layer({
    endpoints: [endpoint],
    ...security,
    namespace,
    serviceName: "gateway-service",
    version: "test",
    ttlSeconds: 5,
    metadata: {},
    grpcEndpoint: "grpc://127.0.0.1:15091",
    retry: undefined
  })

const settingsOf = (settings: Parameters<typeof etcdSecurity>[0]) => Effect.runPromise(etcdSecurity(settings))

/** Stopped when the test's scope closes, after everything acquired later (clients, registrations). */
const scopedEtcd = (options?: Parameters<typeof startEtcd>[0]) =>
  Effect.acquireRelease(Effect.promise(() => startEtcd(options)), (etcd) => Effect.promise(() => etcd.stop()))

const none = { username: "", password: "", tls: { ca: "", cert: "", key: "" } }

describe("etcd with TLS and users", () => {
  it.scopedLive("registers and discovers over TLS with a client certificate; nothing gets in over plain HTTP", () =>
    Effect.gen(function*() {
      const server = pki.cert("etcd-server")
      const client = pki.cert("gateway")
      const etcd = yield* scopedEtcd({ tls: { ...server, ca: pki.ca, clientCertAuth: true, client } })
      expect(etcd.endpoint.startsWith("https://")).toBe(true)
      const namespace = freshNamespace()
      const security = yield* Effect.promise(() =>
        settingsOf({ ...none, tls: { ca: pki.ca, cert: client.cert, key: client.key } })
      )
      const registry = yield* buildService(ServiceRegistration, registration(etcd.endpoint.replace("https://", ""), namespace, security))
      const key = yield* registry.key.pipe(Effect.timeout("10 seconds"))
      expect(key).toBe(`${namespace}/gateway-service/gateway-service-001`)

      const discovered = yield* watchService({ endpoints: [etcd.endpoint], ...security, namespace, serviceName: "gateway-service" })
      yield* eventually(async () => (await Effect.runPromise(discovered.get)).map((i) => i.id), (ids) => ids.length === 1)

      const trusting = new Etcd3({
        hosts: etcd.endpoint,
        credentials: { rootCertificate: Fs.readFileSync(pki.ca), certChain: Fs.readFileSync(client.cert), privateKey: Fs.readFileSync(client.key) }
      })
      expect(Object.keys(yield* Effect.promise(() => trusting.getAll().prefix(namespace).strings()))).toEqual([key])
      trusting.close()

      // No client certificate: etcd refuses the TLS handshake.
      const anonymous = new Etcd3({ hosts: etcd.endpoint, credentials: { rootCertificate: Fs.readFileSync(pki.ca) } })
      const refused = yield* Effect.either(Effect.tryPromise(() => anonymous.get("anything").string()))
      anonymous.close()
      expect(Either.isLeft(refused)).toBe(true)
    }).pipe(quiet), 60_000)

  it.scopedLive("with etcd's authentication on, registers only with etcd.username and etcd.password", () =>
    Effect.gen(function*() {
      const etcd = yield* scopedEtcd()
      enableEtcdAuth(etcd.endpoint, "root-pw-42")
      const namespace = freshNamespace()

      const withoutCredentials = yield* buildService(ServiceRegistration, registration(etcd.endpoint, namespace, {}))
      // An absence: no event says "refused for good", so give it several retries (200 ms backoff up).
      yield* Effect.sleep("1500 millis")
      expect((yield* withoutCredentials.state).instanceId).toEqual(Option.none())

      const security = yield* Effect.promise(() => settingsOf({ ...none, username: "root", password: "root-pw-42" }))
      const withCredentials = yield* buildService(ServiceRegistration, registration(etcd.endpoint, namespace, security))
      expect(yield* withCredentials.key.pipe(Effect.timeout("10 seconds"))).toBe(`${namespace}/gateway-service/gateway-service-001`)
    }).pipe(quiet), 60_000)

  it.effect("refuses half a credential or a client certificate without a CA, naming the keys", () =>
    Effect.gen(function*() {
      const cases: Array<[Parameters<typeof etcdSecurity>[0], string]> = [
        [{ ...none, username: "root" }, "etcd.username and etcd.password go together"],
        [{ ...none, tls: { ca: "", cert: "/c.pem", key: "/k.pem" } }, "etcd.tls.cert needs etcd.tls.ca"],
        [{ ...none, tls: { ca: pki.ca, cert: "/c.pem", key: "" } }, "etcd.tls.cert and etcd.tls.key go together"],
        [{ ...none, tls: { ca: "/missing/ca.pem", cert: "", key: "" } }, "etcd.tls.ca: cannot read /missing/ca.pem"]
      ]
      for (const [settings, message] of cases) {
        const result = yield* Effect.either(etcdSecurity(settings))
        expect(Either.isLeft(result) && result.left.message).toContain(message)
      }
    }))
})
