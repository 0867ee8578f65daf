import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Net from "node:net"
import type { NodeServerOptions } from "../../src/adapters/net/NodeServer.js"
import { NodeServer } from "../../src/adapters/net/NodeServer.js"

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

/** The server, alive for the rest of the test's scope. */
const serverWith = (options: Omit<NodeServerOptions, "port" | "host">) =>
  Effect.map(Layer.build(NodeServer.layer({ port: 0, host: "127.0.0.1", ...options })), Context.get(NodeServer))

const promise = <A>(thunk: () => Promise<A>) => Effect.promise(thunk)

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

  it.scopedLive("past maxConnections new connections are closed at once", () =>
    Effect.gen(function*() {
      const { port, server } = yield* serverWith({ maxConnections: 2 })
      server.on("request", (_request, response) => response.end("ok"))
      const open = () =>
        Effect.async<Net.Socket>((resume) => {
          const socket = Net.connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
          socket.on("error", () => {})
        })
      // The server has taken both held connections (and counts them) before the third arrives.
      let seen = 0
      const bothTaken = new Promise<void>((resolve) => server.on("connection", () => ++seen === 2 && resolve()))
      const held = [yield* open(), yield* open()]
      yield* promise(() => bothTaken)
      const third = yield* slowClient(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      expect(third).toEqual({ answer: "", closed: true })
      for (const socket of held) socket.destroy()
    }))
})
