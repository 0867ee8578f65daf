import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import * as Net from "node:net"
import { connectionBudgetOf, frontDoorOptionsConfig, parseOpenFileLimit } from "../../src/adapters/platform/net/FrontDoor.js"
import type { FrontDoorOptions, ListenerPolicy } from "../../src/adapters/platform/net/Guard.js"
import { makeFrontDoor } from "../../src/adapters/platform/net/Overload.js"

const roomy: FrontDoorOptions = {
  maxOpenFiles: 1_000,
  connectionBudget: 100,
  pressureThreshold: 0.8,
  maxHeapBytes: Number.MAX_SAFE_INTEGER,
  maxRssBytes: Number.MAX_SAFE_INTEGER,
  // The tests drive the sweep themselves, with a clock of their own.
  sweepIntervalMs: 3_600_000
}

const policy = (overrides: Partial<ListenerPolicy> = {}): ListenerPolicy => ({
  name: "test",
  maxConnections: 0,
  maxPerAddress: 0,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 10_000,
  trustedIdleTimeoutMs: 0,
  requiresCredentials: false,
  ...overrides
})

/** A plain TCP server whose accepted sockets the test sees, in order, once the door admitted them. */
const serve = (guard: (server: Net.Server) => void) =>
  Effect.acquireRelease(
    Effect.async<{ readonly port: number; readonly accepted: Array<Net.Socket>; readonly server: Net.Server }>((resume) => {
      const accepted: Array<Net.Socket> = []
      const server = Net.createServer((socket) => {
        socket.on("error", () => {})
        if (!socket.destroyed) accepted.push(socket)
      })
      guard(server)
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, accepted, server })))
    }),
    ({ accepted, server }) =>
      Effect.sync(() => {
        for (const socket of accepted) socket.destroy()
        server.close()
      })
  )

interface Client {
  readonly socket: Net.Socket
  /** Resolves once the server has closed the connection. */
  readonly closed: Promise<void>
}

const connect = (port: number, localAddress = "127.0.0.1") =>
  Effect.acquireRelease(
    Effect.async<Client>((resume) => {
      const socket = Net.connect({ port, host: "127.0.0.1", localAddress })
      socket.on("error", () => {})
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
      socket.once("connect", () => resume(Effect.succeed({ socket, closed })))
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

/** Waits until the server side has admitted `count` sockets (or refused the rest). */
const admitted = (accepted: ReadonlyArray<Net.Socket>, count: number) =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      const check = () => (accepted.length >= count ? resolve() : setTimeout(check, 5))
      check()
    })
  )

const isOpen = (client: Client) =>
  Effect.promise(() => Promise.race([client.closed.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 150))]))

const door = (options: Partial<FrontDoorOptions> = {}) =>
  Effect.acquireRelease(Effect.sync(() => makeFrontDoor({ ...roomy, ...options })), (made) => Effect.sync(made.close))

describe("the front door", () => {
  it.scopedLive("at the budget a newcomer sheds the oldest stranger, never a trusted connection; with only trusted ones it is refused", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door({ connectionBudget: 3 })
      const listener = frontDoor.listener(policy())
      const { accepted, port } = yield* serve(listener.guard)
      const trusted = yield* connect(port)
      const oldest = yield* connect(port)
      const younger = yield* connect(port)
      yield* admitted(accepted, 3)
      listener.trust(accepted[0]!)
      const newcomer = yield* connect(port)
      yield* Effect.promise(() => oldest.closed)
      expect(yield* isOpen(trusted)).toBe(true)
      expect(yield* isOpen(younger)).toBe(true)
      expect(yield* isOpen(newcomer)).toBe(true)
      // Every stranger but the ones that completed a request goes before a trusted one does.
      yield* admitted(accepted, 4)
      listener.trust(accepted[2]!)
      listener.trust(accepted[3]!)
      const refused = yield* connect(port)
      yield* Effect.promise(() => refused.closed)
      expect(yield* isOpen(trusted)).toBe(true)
      expect(frontDoor.stats().listeners[0]!.closed).toEqual({ budget: 2 })
    }))

  it.scopedLive("a request that ends after its connection closed leaves nothing to shed in a live stranger's place", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door({ connectionBudget: 2 })
      const listener = frontDoor.listener(policy())
      const { accepted, port } = yield* serve(listener.guard)
      const gone = yield* connect(port)
      yield* admitted(accepted, 1)
      const goneSide = accepted[0]!
      listener.requestStarted(goneSide)
      const serverSawClose = new Promise<void>((resolve) => goneSide.once("close", () => resolve()))
      gone.socket.destroy()
      yield* Effect.promise(() => serverSawClose)
      // As an HTTP response does when its socket closed under it: its end comes after the close.
      listener.requestEnded(goneSide)
      expect(frontDoor.stats().open).toBe(0)
      // Two live strangers that each completed a request: idle, younger than the closed one.
      const first = yield* connect(port)
      const second = yield* connect(port)
      yield* admitted(accepted, 3)
      for (const socket of accepted.slice(1, 3)) {
        listener.requestStarted(socket)
        listener.requestEnded(socket)
      }
      const newcomer = yield* connect(port)
      yield* Effect.promise(() => first.closed)
      expect(yield* isOpen(second)).toBe(true)
      expect(yield* isOpen(newcomer)).toBe(true)
      expect(frontDoor.stats().open).toBe(2)
      expect(frontDoor.stats().listeners[0]!.closed).toEqual({ budget: 1 })
    }))

  it.scopedLive("newcomers admitted in one turn each shed a different stranger, so the budget holds", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door({ connectionBudget: 2 })
      const listener = frontDoor.listener(policy())
      // Accepted without the door, then admitted by hand back to back, as libuv hands a burst of
      // accepted connections to the listener in one turn, before any `close` event can run.
      const { accepted, port } = yield* serve(() => {})
      const clients = [yield* connect(port), yield* connect(port), yield* connect(port), yield* connect(port)]
      yield* admitted(accepted, 4)
      expect(listener.admit(accepted[0]!)).toBe(true)
      expect(listener.admit(accepted[1]!)).toBe(true)
      expect(listener.admit(accepted[2]!)).toBe(true)
      expect(listener.admit(accepted[3]!)).toBe(true)
      yield* Effect.promise(() => Promise.all([clients[0]!.closed, clients[1]!.closed]))
      expect(yield* isOpen(clients[2]!)).toBe(true)
      expect(yield* isOpen(clients[3]!)).toBe(true)
      expect(frontDoor.stats().open).toBe(2)
      expect(frontDoor.stats().listeners[0]!.closed).toEqual({ budget: 2 })
    }))

  it.scopedLive("one budget for every listener: a newcomer on one listener sheds a stranger of another", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door({ connectionBudget: 2 })
      const publicSide = frontDoor.listener(policy({ name: "http" }))
      const internal = frontDoor.listener(policy({ name: "push" }))
      const a = yield* serve(publicSide.guard)
      const b = yield* serve(internal.guard)
      const stranger = yield* connect(a.port)
      const taskService = yield* connect(b.port)
      yield* admitted(b.accepted, 1)
      internal.trust(b.accepted[0]!)
      const second = yield* connect(b.port)
      yield* Effect.promise(() => stranger.closed)
      expect(yield* isOpen(taskService)).toBe(true)
      expect(yield* isOpen(second)).toBe(true)
      expect(frontDoor.stats().open).toBe(2)
    }))

  it.scopedLive("a per-address cap refuses the address past it while other addresses connect; trusted proxies are exempt", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door()
      const listener = frontDoor.listener(policy({ maxPerAddress: 2, exempt: (ip) => ip === "127.0.0.3" }))
      const { port } = yield* serve(listener.guard)
      const held = [yield* connect(port), yield* connect(port)]
      const third = yield* connect(port)
      yield* Effect.promise(() => third.closed)
      const other = yield* connect(port, "127.0.0.2")
      expect(yield* isOpen(other)).toBe(true)
      const proxied = [yield* connect(port, "127.0.0.3"), yield* connect(port, "127.0.0.3"), yield* connect(port, "127.0.0.3")]
      for (const client of [...held, ...proxied]) expect(yield* isOpen(client)).toBe(true)
      expect(listener.stats().closed).toEqual({ per_address: 1 })
    }))

  it.scopedLive("under pressure the deadlines of idle strangers and half-sent requests shrink; a silent one keeps its own until critical; trusted connections stay", () =>
    Effect.gen(function*() {
      let loopIdle = 0
      const frontDoor = yield* Effect.acquireRelease(
        Effect.sync(() => makeFrontDoor({ ...roomy, connectionBudget: 10, pressureThreshold: 0.3 }, undefined, () => loopIdle)),
        (made) => Effect.sync(made.close)
      )
      const listener = frontDoor.listener(policy({ handshakeTimeoutMs: 10_000, idleTimeoutMs: 10_000 }))
      const { accepted, port } = yield* serve(listener.guard)
      const silent = yield* connect(port)
      const served = yield* connect(port)
      const trusted = yield* connect(port)
      const halfSent = yield* connect(port)
      yield* admitted(accepted, 4)
      listener.requestStarted(accepted[1]!)
      listener.requestEnded(accepted[1]!)
      listener.trust(accepted[2]!)
      // A slow-loris: part of a request, never the end of its headers.
      halfSent.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n")
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const check = () => (accepted[3]!.bytesRead > 0 ? resolve() : setTimeout(check, 5))
          check()
        })
      )
      const levels: Array<string> = []
      frontDoor.onLevel((level) => levels.push(level))
      // Four of ten is past the threshold of 0.3: an idle stranger and a half-sent request get 2 s
      // instead of 10. One we have read nothing from may be a client of a storm waiting for its
      // turn: it keeps its 10 s, even though the loop has been idle since it came.
      const start = Date.now()
      frontDoor.sweep(start)
      loopIdle = 5
      frontDoor.sweep(start + 2_500)
      expect(levels).toEqual(["normal", "elevated"])
      yield* Effect.promise(() => Promise.all([served.closed, halfSent.closed]))
      expect(yield* isOpen(silent)).toBe(true)
      expect(listener.stats().closed).toEqual({ idle_timeout: 1, handshake_timeout: 1 })
      frontDoor.sweep(start + 10_100)
      yield* Effect.promise(() => silent.closed)
      expect(yield* isOpen(trusted)).toBe(true)
      expect(listener.stats().closed).toEqual({ idle_timeout: 1, handshake_timeout: 2 })
    }))

  it.scopedLive("at critical pressure silent strangers get 500 ms once the event loop has caught up since they came, shed only down to the critical line", () =>
    Effect.gen(function*() {
      let loopIdle = 0
      const frontDoor = yield* Effect.acquireRelease(
        Effect.sync(() => makeFrontDoor({ ...roomy, connectionBudget: 40 }, undefined, () => loopIdle)),
        (made) => Effect.sync(made.close)
      )
      const listener = frontDoor.listener(policy({ handshakeTimeoutMs: 10_000 }))
      const { accepted, port } = yield* serve(listener.guard)
      const clients: Array<Client> = []
      for (let i = 0; i < 40; i++) clients.push(yield* connect(port))
      yield* admitted(accepted, 40)
      const start = Date.now()
      // Forty of forty: critical. The loop has been busy all along (no idle time), as in a storm that
      // it is still serving in order: what the clients sent may be unread, so nobody is closed.
      frontDoor.sweep(start)
      frontDoor.sweep(start + 600)
      expect(frontDoor.level()).toBe("critical")
      expect(yield* Effect.all(clients.map(isOpen), { concurrency: "unbounded" })).toEqual(clients.map(() => true))
      // The loop waited with nothing to do after the reading at `start`: they have shown nothing
      // though it could read them. The oldest two are closed, which brings the count to the
      // critical line (38 of 40); the others keep their own deadline.
      loopIdle = 5
      frontDoor.sweep(start + 700)
      yield* Effect.promise(() => Promise.all([clients[0]!.closed, clients[1]!.closed]))
      expect(yield* Effect.all(clients.slice(2).map(isOpen), { concurrency: "unbounded" })).toEqual(clients.slice(2).map(() => true))
      expect(listener.stats().closed).toEqual({ handshake_timeout: 2 })
    }))

  it.scopedLive("however busy the loop, a fresh stranger is closed at its configured handshake timeout", () =>
    Effect.gen(function*() {
      const frontDoor = yield* Effect.acquireRelease(
        Effect.sync(() => makeFrontDoor({ ...roomy, connectionBudget: 1 }, undefined, () => 0)),
        (made) => Effect.sync(made.close)
      )
      const listener = frontDoor.listener(policy({ handshakeTimeoutMs: 10_000 }))
      const { accepted, port } = yield* serve(listener.guard)
      const silent = yield* connect(port)
      yield* admitted(accepted, 1)
      frontDoor.sweep(Date.now() + 9_000)
      expect(yield* isOpen(silent)).toBe(true)
      frontDoor.sweep(Date.now() + 10_100)
      yield* Effect.promise(() => silent.closed)
    }))

  it.scopedLive("a listener that requires credentials closes an untrusted connection at the deadline even while it is busy", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door()
      const listener = frontDoor.listener(policy({ handshakeTimeoutMs: 5_000, requiresCredentials: true, trustedIdleTimeoutMs: 60_000 }))
      const { accepted, port } = yield* serve(listener.guard)
      const tokenless = yield* connect(port)
      const task = yield* connect(port)
      yield* admitted(accepted, 2)
      listener.requestStarted(accepted[0]!)
      listener.trust(accepted[1]!)
      frontDoor.sweep(Date.now() + 5_100)
      yield* Effect.promise(() => tokenless.closed)
      expect(yield* isOpen(task)).toBe(true)
      // A trusted connection with no call in flight for its idle timeout is closed too.
      frontDoor.sweep(Date.now() + 61_000)
      yield* Effect.promise(() => task.closed)
    }))

  it.scopedLive("short of memory, strangers are shed whatever their age, trusted connections stay", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door({ maxHeapBytes: 1 })
      const listener = frontDoor.listener(policy())
      const { accepted, port } = yield* serve(listener.guard)
      const stranger = yield* connect(port)
      const trusted = yield* connect(port)
      yield* admitted(accepted, 2)
      listener.trust(accepted[1]!)
      frontDoor.sweep(Date.now())
      yield* Effect.promise(() => stranger.closed)
      expect(yield* isOpen(trusted)).toBe(true)
      expect(frontDoor.level()).toBe("critical")
    }))

  it.scopedLive("a ban turns the address away for its time, and only that address", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door()
      const listener = frontDoor.listener(policy())
      const { accepted, port } = yield* serve(listener.guard)
      const flooder = yield* connect(port)
      yield* admitted(accepted, 1)
      listener.ban(accepted[0]!, 60_000)
      yield* Effect.promise(() => flooder.closed)
      const again = yield* connect(port)
      yield* Effect.promise(() => again.closed)
      const other = yield* connect(port, "127.0.0.2")
      expect(yield* isOpen(other)).toBe(true)
      expect(listener.stats().closed).toEqual({ banned: 2 })
    }))

  it.scopedLive("a ban with a grace turns the address away at once and closes the banned connection when the grace ends", () =>
    Effect.gen(function*() {
      const frontDoor = yield* door()
      const listener = frontDoor.listener(policy())
      const { accepted, port } = yield* serve(listener.guard)
      const cut = yield* connect(port)
      yield* admitted(accepted, 1)
      const bannedAt = performance.now()
      // What its owner wrote last (a GOAWAY, say) still reaches the peer during the grace.
      accepted[0]!.write("farewell")
      listener.ban(accepted[0]!, 60_000, 400)
      const again = yield* connect(port)
      yield* Effect.promise(() => again.closed)
      expect(yield* isOpen(cut)).toBe(true)
      const received = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          let text = ""
          cut.socket.on("data", (chunk: Buffer) => (text += chunk.toString()))
          void cut.closed.then(() => resolve(text))
        })
      )
      expect(received).toBe("farewell")
      expect(performance.now() - bannedAt).toBeGreaterThanOrEqual(350)
      expect(listener.stats().closed).toEqual({ banned: 2 })
    }))
})

describe("the budget from the descriptor limit", () => {
  it("reads the soft limit of /proc/self/limits", () => {
    const limits = [
      "Limit                     Soft Limit           Hard Limit           Units     ",
      "Max processes             96367                96367                processes ",
      "Max open files            20000                40000                files     "
    ].join("\n")
    expect(parseOpenFileLimit(limits)).toBe(20_000)
    expect(parseOpenFileLimit("Max open files            unlimited            unlimited            files")).toBe(1_048_576)
    expect(parseOpenFileLimit("nothing here")).toBeUndefined()
  })

  it("derives the budget below the limit, with headroom", () => {
    expect(connectionBudgetOf(20_000)).toBe(19_600)
    expect(connectionBudgetOf(1_024)).toBe(960)
    for (const limit of [64, 256, 1_024, 65_536]) expect(connectionBudgetOf(limit)).toBeLessThan(limit)
  })

  it.effect("the configuration: defaults derived from the limit, a budget at or above it refused naming the key", () =>
    Effect.gen(function*() {
      const options = yield* Effect.withConfigProvider(frontDoorOptionsConfig, ConfigProvider.fromJson({ overload: { max_open_files: 4096 } }))
      expect(options.maxOpenFiles).toBe(4096)
      expect(options.connectionBudget).toBe(connectionBudgetOf(4096))
      expect(options.connectionBudget).toBeLessThan(4096)
      const refused = yield* Effect.flip(
        Effect.withConfigProvider(frontDoorOptionsConfig, ConfigProvider.fromJson({ overload: { max_open_files: 4096, connection_budget: 5000 } }))
      )
      expect(String(refused)).toContain("overload.connection_budget")
    }))
})
