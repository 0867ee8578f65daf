import { afterEach, beforeEach, describe, expect, it, vi } from "@effect/vitest"
import { Effect } from "effect"
import { WebSocket } from "ws"
import { forkHeartbeat } from "../../src/adapters/ws/Heartbeat.js"
import type { WsClient } from "../../src/adapters/ws/WsClient.js"

interface FakeClient {
  readonly id: number
  pings: number
  terminated: boolean
}

/** Just what the heartbeat reads and calls of a client. */
const fakeClient = (id: number, silentForMs = 0) => {
  const state: FakeClient = { id, pings: 0, terminated: false }
  const client = {
    info: { id },
    lastSeen: Date.now() - silentForMs,
    ws: {
      readyState: WebSocket.OPEN,
      ping: () => void state.pings++,
      terminate: () => void (state.terminated = true)
    }
  } as unknown as WsClient
  return { client, state }
}

/** The heartbeat's plain timer, on vitest's clock; Effect's own timers stay real. */
const advance = (ms: number) => Effect.sync(() => vi.advanceTimersByTime(ms))

describe("heartbeat", () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] }))
  afterEach(() => void vi.useRealTimers())

  it.scoped("pings an equal share of the clients every 100 ms, each once per interval", () =>
    Effect.gen(function*() {
      const fakes = Array.from({ length: 30 }, (_, i) => fakeClient(i + 1))
      const clients = new Set(fakes.map((fake) => fake.client))
      const pinged = () => fakes.reduce((sum, fake) => sum + fake.state.pings, 0)
      // 300 ms interval: three wake-ups of ten pings each.
      yield* forkHeartbeat(clients, "300 millis", "10 seconds")
      yield* Effect.yieldNow()
      expect(pinged()).toBe(10)
      yield* advance(100)
      expect(pinged()).toBe(20)
      yield* advance(100)
      expect(pinged()).toBe(30)
      expect(fakes.every((fake) => fake.state.pings === 1)).toBe(true)
      // The next interval starts over from the first client.
      yield* advance(100)
      expect(fakes.slice(0, 10).every((fake) => fake.state.pings === 2)).toBe(true)
      expect(fakes.slice(10).every((fake) => fake.state.pings === 1)).toBe(true)
    }))

  it.scoped("reaches clients that connect mid-interval, skips those gone, and cuts off the silent", () =>
    Effect.gen(function*() {
      const fakes = Array.from({ length: 4 }, (_, i) => fakeClient(i + 1))
      const silent = fakeClient(99, 60_000)
      const clients = new Set([...fakes.map((fake) => fake.client), silent.client])
      yield* forkHeartbeat(clients, "200 millis", "30 seconds")
      yield* Effect.yieldNow()
      const late = fakeClient(5)
      clients.add(late.client)
      clients.delete(fakes[3]!.client)
      for (let tick = 0; tick < 4; tick++) yield* advance(100)
      expect(late.state.pings).toBeGreaterThanOrEqual(1)
      expect(fakes[3]!.state.pings).toBe(0)
      expect(silent.state.terminated).toBe(true)
      expect(silent.state.pings).toBe(0)
      expect(fakes.slice(0, 3).every((fake) => fake.state.pings >= 2)).toBe(true)
    }))
})
