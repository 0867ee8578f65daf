import type { LiveConnection } from "../../src/application/ports/LiveConnection.js"
import type { MetricsShape } from "../../src/application/ports/Metrics.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { WsPacket as WsPacketFns } from "../../src/gen/gateway/v1/packet.js"

/** Test doubles that stand in for a client or record what the gateway did; none of them builds the gateway. */

export interface FakeConnection extends LiveConnection {
  readonly frames: Array<Uint8Array>
  readonly closes: Array<{ code: number; reason: string }>
  /** Whether reads are paused now, and how often they were. */
  paused: boolean
  pauses: number
  accept: boolean
  packets(): Array<WsPacket>
}

let nextId = 1

/** A socket as the application sees it: keeps what is written to it; `accept` false models a closed or lagging one. */
export const fakeConnection = (
  username: string,
  options: { remoteAddress?: string; expiresAt?: number; tokenId?: string } = {}
): FakeConnection => {
  const frames: Array<Uint8Array> = []
  const closes: Array<{ code: number; reason: string }> = []
  const connection: FakeConnection = {
    info: {
      id: nextId++,
      username,
      remoteAddress: options.remoteAddress ?? "127.0.0.1",
      connectedAt: Date.now(),
      expiresAt: options.expiresAt,
      tokenId: options.tokenId ?? `token-of-${username}`
    },
    frames,
    closes,
    accept: true,
    send: (frame) => {
      if (!connection.accept) return false
      frames.push(frame)
      return true
    },
    close: (code, reason) => {
      closes.push({ code, reason })
    },
    paused: false,
    pauses: 0,
    pauseReads: () => {
      connection.paused = true
      connection.pauses++
    },
    resumeReads: () => {
      connection.paused = false
    },
    packets: () => frames.map((frame) => WsPacketFns.decode(frame))
  }
  return connection
}

export type MetricEvent = { readonly name: keyof MetricsShape; readonly args: ReadonlyArray<unknown> }

export interface GrpcMetric {
  readonly method: string
  readonly code: string
}

/**
 * A Metrics port that records every call, for asserting that events are counted: `shape` is the
 * test gateway's `metrics` option, `layer` the port for an adapter tested alone.
 */
export const recordingMetrics = () => {
  const events: Array<MetricEvent> = []
  const grpc: Array<GrpcMetric> = []
  const record = (name: keyof MetricsShape) => (...args: ReadonlyArray<unknown>) => {
    events.push({ name, args })
    if (name === "grpcRequest") grpc.push({ method: args[0] as string, code: args[1] as string })
  }
  const shape = Object.fromEntries(Object.keys(Metrics.noop).map((name) => [name, record(name as keyof MetricsShape)])) as unknown as MetricsShape
  const count = (name: keyof MetricsShape) => events.filter((e) => e.name === name).length
  return { events, grpc, shape, count, layer: Metrics.layerTest(shape) }
}
