import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import * as Http2 from "node:http2"
import { insecureInternal } from "../../src/adapters/platform/grpc/Security.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import { grpcFrame } from "../../src/adapters/platform/grpc/UnaryServer.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import { withFrontDoor } from "../support/door.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { SearchUserRequest } from "../../src/gen/logic/v1/session.js"
import { PushRequest } from "../../src/gen/gateway/v1/push.js"
import { rawRequest, servePush, statusOf } from "./support.js"

/**
 * The internal gRPC ports open for credentials, not for connections: a connection that has made
 * no admitted call within `internal.handshake_timeout` is closed, one that has stays; an address
 * holds at most `internal.max_connections_per_ip` connections.
 */

const TOKEN = "internal-listener-test-token"

const settings = ConfigProvider.fromJson({
  internal: { handshake_timeout: "300ms", max_connections_per_ip: 3 }
})

const serveLogicPort = Effect.gen(function*() {
  const logic = yield* Effect.provide(Logic, Logic.layerTest({ searchUser: () => Effect.succeed([]) }))
  const { port } = yield* serveLogic(logic, { port: 0, host: "127.0.0.1", shutdownTimeout: "1 second" }).pipe(
    Effect.provide(InternalAuth.layer({ ...insecureInternal, insecure: false, token: TOKEN })),
    withFrontDoor
  )
  return port
}).pipe(Effect.withConfigProvider(settings))

interface Session {
  readonly session: Http2.ClientHttp2Session
  readonly closed: Promise<void>
}

const openSession = (port: number) =>
  Effect.acquireRelease(
    Effect.async<Session>((resume) => {
      const session = Http2.connect(`http://127.0.0.1:${port}`)
      session.on("error", () => {})
      const closed = new Promise<void>((resolve) => session.once("close", () => resolve()))
      session.once("connect", () => resume(Effect.succeed({ session, closed })))
    }),
    ({ session }) => Effect.sync(() => session.destroy())
  )

/** One unary gRPC call of `path` on the session; its grpc-status. */
const unaryCall = (session: Http2.ClientHttp2Session, path: string, body: Uint8Array, token: string | undefined) =>
  Effect.suspend(() => {
    const { answer, stream } = rawRequest(session, path, token === undefined ? {} : { authorization: `Bearer ${token}` })
    stream.end(grpcFrame(body))
    return Effect.map(answer, (received) => String(statusOf(received)))
  })

const search = (session: Http2.ClientHttp2Session, token: string | undefined) =>
  unaryCall(session, "/resonance.logic.v1.SessionService/SearchUser", SearchUserRequest.encode({ query: "x" }).finish(), token)

const pushCall = (session: Http2.ClientHttp2Session, token: string | undefined) =>
  unaryCall(
    session,
    "/resonance.gateway.v1.PushService/Push",
    PushRequest.encode({ toUsernames: ["nobody"], message: undefined }).finish(),
    token
  )

const stillOpenAfter = (session: Session, ms: number) =>
  Effect.promise(() =>
    Promise.race([session.closed.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), ms))])
  )

describe("the push port at the front door", () => {
  it.scopedLive("closes a connection that shows no token in time, keeps the Task service's; caps connections per address", () =>
    Effect.gen(function*() {
      const { port } = yield* servePush({
        config: { internal: { insecure: false, token: TOKEN, handshake_timeout: "300ms", max_connections_per_ip: 3 } }
      })
      const preface = yield* openSession(port)
      const tokenless = yield* openSession(port)
      expect(yield* pushCall(tokenless.session, undefined)).toBe("16")
      const task = yield* openSession(port)
      // An admitted call (the request itself is invalid: no message) is what opens the door.
      expect(yield* pushCall(task.session, TOKEN)).toBe("3")
      yield* Effect.promise(() => Promise.all([preface.closed, tokenless.closed]))
      expect(yield* stillOpenAfter(task, 800)).toBe(true)
      const more = [yield* openSession(port), yield* openSession(port)]
      const past = Http2.connect(`http://127.0.0.1:${port}`)
      past.on("error", () => {})
      yield* Effect.promise(() => new Promise<void>((resolve) => past.once("close", () => resolve())))
      for (const session of more) session.session.destroy()
    }))
})

describe("the Logic gRPC port at the front door", () => {
  it.scopedLive("closes a connection that shows no credentials in time, keeps one that made an admitted call", () =>
    Effect.gen(function*() {
      const port = yield* serveLogicPort
      const idle = yield* openSession(port)
      const tokenless = yield* openSession(port)
      const member = yield* openSession(port)
      expect(yield* search(tokenless.session, undefined)).toBe("16")
      expect(yield* search(member.session, TOKEN)).toBe("0")
      // A refused call is no credential: both strangers go at the handshake deadline.
      yield* Effect.promise(() => Promise.all([idle.closed, tokenless.closed]))
      expect(yield* stillOpenAfter(member, 800)).toBe(true)
      expect(yield* search(member.session, TOKEN)).toBe("0")
    }))

  it.scopedLive("holds at most max_connections_per_ip connections from one address", () =>
    Effect.gen(function*() {
      const port = yield* serveLogicPort
      const held = [yield* openSession(port), yield* openSession(port), yield* openSession(port)]
      for (const session of held) expect(yield* search(session.session, TOKEN)).toBe("0")
      const fourth = Http2.connect(`http://127.0.0.1:${port}`)
      fourth.on("error", () => {})
      yield* Effect.promise(() => new Promise<void>((resolve) => fourth.once("close", () => resolve())))
      expect(fourth.destroyed).toBe(true)
      for (const session of held) expect(yield* stillOpenAfter(session, 100)).toBe(true)
    }))
})
