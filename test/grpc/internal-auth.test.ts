import * as grpc from "@grpc/grpc-js"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Layer } from "effect"
import * as Fs from "node:fs"
import { pushClient } from "../../src/adapters/logic-server/GatewayPush.js"
import type { InternalSecurityOptions } from "../../src/adapters/platform/grpc/Security.js"
import { withFrontDoor } from "../support/door.js"
import { insecureInternal, makeInternalSecurity } from "../../src/adapters/platform/grpc/Security.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import type { PushMessage } from "../../src/domain/Model.js"
import { PushServiceClient } from "../../src/gen/gateway/v1/push.js"
import type { PushRequest, PushResponse } from "../../src/gen/gateway/v1/push.js"
import { fakeConnection } from "../support/helpers.js"
import type { Settings } from "../support/gateway.js"
import { makePki } from "../support/tls.js"
import { buildLogic, fakeLogic, servePush } from "./support.js"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"

const forged: PushMessage = {
  msgId: 1n,
  seqId: 1n,
  sessionId: "0",
  fromUsername: "admin",
  toUsername: "",
  content: "your account is locked, log in at evil.example",
  type: "system",
  timestamp: 4_102_444_800n,
  sessionMeta: { name: "Resonance Room", type: 2 }
}

const options = (overrides: Partial<InternalSecurityOptions>): InternalSecurityOptions => ({
  ...insecureInternal,
  insecure: false,
  ...overrides
})

/** `security` as the gateway's `internal.*` settings say it. */
const internalSettings = (security: InternalSecurityOptions): Settings => ({
  internal: {
    token: security.token,
    insecure: security.insecure,
    tls: { ca: security.tls.ca, cert: security.tls.cert, key: security.tls.key, server_name: security.tls.serverName },
    ip_allow: security.ipAllow,
    ip_deny: security.ipDeny
  }
})

/** The gateway's PushService, its `internal.*` from `security`, over a hub holding one connection of "victim". */
const startPushServer = (security: InternalSecurityOptions) =>
  Effect.gen(function*() {
    const { hub, port } = yield* servePush({ config: internalSettings(security) })
    const victim = fakeConnection("victim")
    hub.add(victim)
    return { port, victim }
  })

/** A raw grpc-js client, as an attacker (or the Go Task service) would call. */
const rawPush = (
  port: number,
  request: PushRequest,
  metadata = new grpc.Metadata(),
  credentials = grpc.credentials.createInsecure()
) =>
  Effect.async<PushResponse, grpc.ServiceError>((resume) => {
    const client = new PushServiceClient(`127.0.0.1:${port}`, credentials)
    client.push(request, metadata, { deadline: Date.now() + 3_000 }, (error, response) => {
      client.close()
      resume(error ? Effect.fail(error) : Effect.succeed(response))
    })
  })

const bearer = (token: string) => {
  const metadata = new grpc.Metadata()
  metadata.set("authorization", `Bearer ${token}`)
  return metadata
}

const pki = makePki("internal")
const rogue = makePki("rogue")
afterAll(() => {
  pki.remove()
  rogue.remove()
})

describe("internal RPC authentication", () => {
  it.scopedLive("with no token, no TLS and no insecure opt-in, PushService refuses every call and delivers nothing", () =>
    Effect.gen(function*() {
      const { port, victim } = yield* startPushServer(options({}))
      const error = yield* Effect.flip(rawPush(port, { toUsernames: ["victim"], message: forged }))
      expect(error.code).toBe(grpc.status.UNAUTHENTICATED)
      expect(error.details).toContain("internal.token")
      expect(victim.frames).toEqual([])
    }))

  it.scopedLive("with a token, a call without it or with another one is refused; the right one delivers", () =>
    Effect.gen(function*() {
      const { port, victim } = yield* startPushServer(options({ token: "s3cret-internal-token" }))
      // Absent, shorter, longer, and as long as the token but one character off.
      for (const metadata of [new grpc.Metadata(), bearer("guess"), bearer("s3cret-internal-token "), bearer("s3cret-internal-tokem")]) {
        const error = yield* Effect.flip(rawPush(port, { toUsernames: ["victim"], message: forged }, metadata))
        expect(error.code).toBe(grpc.status.UNAUTHENTICATED)
      }
      expect(victim.frames).toEqual([])
      const response = yield* rawPush(port, { toUsernames: ["victim"], message: forged }, bearer("s3cret-internal-token"))
      expect(response.failedUsernames).toEqual([])
      expect(victim.frames).toHaveLength(1)
    }))

  it.scopedLive("our Push client sends the configured token", () =>
    Effect.gen(function*() {
      const security = options({ token: "shared-token-123" })
      const { port, victim } = yield* startPushServer(security)
      const client = yield* pushClient(`127.0.0.1:${port}`).pipe(Effect.provide(InternalAuth.layer(security)))
      const response = yield* client.push({ toUsernames: ["victim", "nobody"], message: forged })
      expect(response.failedUsernames).toEqual(["nobody"])
      expect(victim.frames).toHaveLength(1)
    }))

  it.scopedLive("internal.ip_deny applies to the internal port: a denied peer is refused before its token is read", () =>
    Effect.gen(function*() {
      const { port, victim } = yield* startPushServer(options({ token: "t0ken-t0ken", ipDeny: ["127.0.0.0/8"] }))
      // Verdicts are kept per peer: a denied address stays denied call after call.
      for (let call = 0; call < 2; call++) {
        const error = yield* Effect.flip(rawPush(port, { toUsernames: ["victim"], message: forged }, bearer("t0ken-t0ken")))
        expect(error.code).toBe(grpc.status.PERMISSION_DENIED)
      }
      expect(victim.frames).toEqual([])
      const allowed = yield* startPushServer(options({ token: "t0ken-t0ken", ipAllow: ["127.0.0.1"] }))
      yield* rawPush(allowed.port, { toUsernames: ["victim"], message: forged }, bearer("t0ken-t0ken"))
      expect(allowed.victim.frames).toHaveLength(1)
    }))

  it.scopedLive("mutual TLS: a plaintext client, a client without a certificate and one from another CA never get in", () =>
    Effect.gen(function*() {
      const server = pki.cert("server")
      const tls = { ca: pki.ca, cert: server.cert, key: server.key, serverName: "" }
      const { port, victim } = yield* startPushServer(options({ tls }))
      const request = { toUsernames: ["victim"], message: forged }
      const ca = Fs.readFileSync(pki.ca)
      const intruder = rogue.cert("intruder")
      const attempts = [
        grpc.credentials.createInsecure(),
        grpc.credentials.createSsl(ca),
        grpc.credentials.createSsl(ca, Fs.readFileSync(intruder.key), Fs.readFileSync(intruder.cert))
      ]
      for (const credentials of attempts) {
        const error = yield* Effect.flip(rawPush(port, request, new grpc.Metadata(), credentials))
        expect(error.code).toBe(grpc.status.UNAVAILABLE)
      }
      expect(victim.frames).toEqual([])
      const client = pki.cert("task")
      const clientSecurity = options({ tls: { ca: pki.ca, cert: client.cert, key: client.key, serverName: "" } })
      const push = yield* pushClient(`127.0.0.1:${port}`).pipe(Effect.provide(InternalAuth.layer(clientSecurity)))
      expect((yield* push.push(request)).failedUsernames).toEqual([])
      expect(victim.frames).toHaveLength(1)
    }))

  it.scopedLive("the Logic server refuses an unauthenticated caller; the gateway's Logic client gets in with the token", () =>
    Effect.gen(function*() {
      const security = options({ token: "logic-and-gateways" })
      const { port } = yield* serveLogic(fakeLogic({ searchUser: () => Effect.succeed([]) }), {
        port: 0,
        host: "127.0.0.1"
      }).pipe(Effect.provide(InternalAuth.layer(security)), withFrontDoor)
      const anonymous = yield* buildLogic(
        LogicGrpc.layerStatic([`127.0.0.1:${port}`], { deadline: "2 seconds", retries: 0 }),
        Metrics.layerNoop,
        InternalAuth.layer(options({ insecure: true })).pipe(Layer.orDie)
      )
      expect((yield* Effect.flip(anonymous.searchUser("x"))).code).toBe("unauthenticated")
      const gateway = yield* buildLogic(
        LogicGrpc.layerStatic([`127.0.0.1:${port}`], { deadline: "2 seconds", retries: 0 }),
        Metrics.layerNoop,
        InternalAuth.layer(security).pipe(Layer.orDie)
      )
      expect(yield* gateway.searchUser("x")).toEqual([])
    }))

  it.effect("half a TLS configuration and a bad address list are refused, naming the keys", () =>
    Effect.gen(function*() {
      const half = yield* Effect.exit(makeInternalSecurity(options({ tls: { ca: pki.ca, cert: "", key: "", serverName: "" } })))
      expect(Exit.isFailure(half) && String(Exit.causeOption(half).pipe((c) => c._tag === "Some" ? c.value : ""))).toContain(
        "internal.tls.cert and internal.tls.key"
      )
      const list = yield* Effect.either(makeInternalSecurity(options({ ipAllow: ["10.0.0.0/99"] })))
      expect(Either.isLeft(list) && list.left.message).toBe("internal.ip_allow: not an address or CIDR range: 10.0.0.0/99")
      const missing = yield* Effect.either(
        makeInternalSecurity(options({ tls: { ca: "/nonexistent/ca.pem", cert: "/x", key: "/y", serverName: "" } }))
      )
      expect(Either.isLeft(missing) && missing.left.message).toContain("internal.tls.ca: cannot read /nonexistent/ca.pem")
    }))
})
