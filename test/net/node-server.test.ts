import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Net from "node:net"
import type { NodeServerOptions } from "../../src/adapters/platform/net/NodeServer.js"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import * as NodeServer from "../../src/adapters/platform/net/NodeServer.js"

/** Sends `head` and waits for the server to answer or hang up. */
const slowClient = (port: number, head: string) =>
  Effect.async<{ readonly answer: string; readonly closed: boolean }>((resume) => {
    const socket = Net.connect(port, "127.0.0.1", () => socket.write(head))
    let answer = ""
    socket.on("data", (chunk) => (answer += chunk))
    socket.on("close", () => resume(Effect.succeed({ answer, closed: true })))
    socket.on("error", () => {})
    const timer = setTimeout(() => {
      socket.destroy()
      resume(Effect.succeed({ answer, closed: false }))
    }, 5_000)
    return Effect.sync(() => clearTimeout(timer))
  })

/** The server behind a roomy front door, alive for the rest of the test's scope. */
const serverWith = (options: Omit<NodeServerOptions, "port" | "host">) =>
  Effect.map(
    Layer.build(NodeServer.layer({ port: 0, host: "127.0.0.1", ...options }).pipe(Layer.provide(FrontDoor.layerTest()))),
    Context.get(NodeServer.NodeServer)
  )

const promise = <A>(thunk: () => Promise<A>) => Effect.promise(thunk)

const open = (port: number, localAddress = "127.0.0.1") =>
  Effect.async<Net.Socket>((resume) => {
    const socket = Net.connect({ port, host: "127.0.0.1", localAddress }, () => resume(Effect.succeed(socket)))
    socket.on("error", () => {})
  })

describe("NodeServer", () => {
  it.scopedLive("a client that never finishes its headers is answered 408 and disconnected (slowloris)", () =>
    Effect.gen(function*() {
      const { port, server } = yield* serverWith({ headersTimeoutMs: 300, requestTimeoutMs: 600 })
      server.on("request", (_request, response) => response.end("ok"))
      const dribbling = yield* slowClient(port, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
      expect(dribbling.closed).toBe(true)
      expect(dribbling.answer).toContain("408")
      // A body that never arrives is cut off by the request timeout.
      const noBody = yield* slowClient(port, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
      expect(noBody.closed).toBe(true)
    }))

  it.scopedLive("past maxConnections the oldest connection that sent nothing makes room; busy ones are not shed", () =>
    Effect.gen(function*() {
      const { port, server } = yield* serverWith({ maxConnections: 2 })
      const waiting: Array<() => void> = []
      server.on("request", (request, response) => {
        if (request.url === "/hold") waiting.push(() => response.end("late"))
        else response.end("ok")
      })
      let seen = 0
      const bothTaken = new Promise<void>((resolve) => server.on("connection", () => ++seen === 2 && resolve()))
      const silent = yield* open(port)
      const held = yield* open(port)
      yield* promise(() => bothTaken)
      const silentClosed = new Promise<void>((resolve) => silent.once("close", () => resolve()))
      const third = yield* slowClient(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      expect(third.answer).toContain("200 OK")
      yield* promise(() => silentClosed)
      // `held` is busy with a request the server has not answered: a newcomer is refused, not it.
      held.write("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
      yield* promise(() => new Promise<void>((resolve) => { const check = () => (waiting.length > 0 ? resolve() : setTimeout(check, 5)); check() }))
      const other = yield* open(port)
      other.write("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
      yield* promise(() => new Promise<void>((resolve) => { const check = () => (waiting.length > 1 ? resolve() : setTimeout(check, 5)); check() }))
      const refused = yield* slowClient(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      expect(refused.answer).toBe("")
      expect(held.destroyed).toBe(false)
      other.destroy()
      held.destroy()
    }))

  it.scopedLive("a connection from an address at its cap is closed; other addresses are served", () =>
    Effect.gen(function*() {
      const { port, server } = yield* serverWith({ maxConnectionsPerIp: 2 })
      server.on("request", (_request, response) => response.end("ok"))
      const held = [yield* open(port), yield* open(port)]
      const third = yield* slowClient(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      expect(third).toEqual({ answer: "", closed: true })
      const other = yield* open(port, "127.0.0.2")
      const answered = yield* promise(() => new Promise<string>((resolve) => {
        other.once("data", (chunk) => resolve(String(chunk)))
        other.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      }))
      expect(answered).toContain("200 OK")
      for (const socket of [...held, other]) socket.destroy()
    }))

  it.scopedLive("a connection that pipelines past the depth is cut", () =>
    Effect.gen(function*() {
      const { port, server } = yield* serverWith({ maxPipelinedRequests: 4 })
      // Requests are never answered, so each one stays in flight.
      server.on("request", () => {})
      const flood = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10)
      const answer = yield* slowClient(port, flood)
      expect(answer.closed).toBe(true)
    }))

  it.scopedLive("each address has a request budget; a run of refusals turns the address away, not others", () =>
    Effect.gen(function*() {
      const { admitRequest, clientIp, port, server } = yield* serverWith({ requestsPerIpPerSecond: 1, requestBurst: 3 })
      server.on("request", (request, response) => {
        const retryAfter = admitRequest(request, clientIp(request))
        response.writeHead(retryAfter === 0 ? 200 : 429).end()
      })
      // One request at a time on one keep-alive connection, until the server hangs up.
      const statuses = yield* promise(() => new Promise<Array<number>>((resolve) => {
        const seen: Array<number> = []
        const socket = Net.connect(port, "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        socket.on("data", (chunk) => {
          for (const match of String(chunk).matchAll(/HTTP\/1\.1 (\d{3})/g)) seen.push(Number(match[1]))
          if (seen.length < 30) socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        })
        socket.on("error", () => {})
        socket.on("close", () => resolve(seen))
      }))
      expect(statuses.slice(0, 3)).toEqual([200, 200, 200])
      expect(statuses.slice(3).every((status) => status === 429)).toBe(true)
      // The twentieth refusal in a row ended the connection and banned the address for a while.
      expect(statuses).toHaveLength(23)
      const again = yield* slowClient(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      expect(again).toEqual({ answer: "", closed: true })
      const other = yield* promise(() => new Promise<string>((resolve) => {
        const socket = Net.connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" }, () => socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        let text = ""
        socket.on("data", (chunk) => (text += chunk))
        socket.on("close", () => resolve(text))
      }))
      expect(other).toContain("200 OK")
    }))
})
