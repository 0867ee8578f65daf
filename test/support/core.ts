import { Effect, Layer } from "effect"
import type { LiveConnection } from "../../src/application/ConnectionHub.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { Authenticator } from "../../src/application/Authenticator.js"
import type { DispatcherOptions } from "../../src/application/Dispatcher.js"
import { Dispatcher } from "../../src/application/Dispatcher.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Logic } from "../../src/application/ports/Logic.js"
import type { MetricsShape } from "../../src/application/ports/Metrics.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import type { PresenceBatcherOptions } from "../../src/application/PresenceBatcher.js"
import { PresenceBatcher } from "../../src/application/PresenceBatcher.js"
import { PushDelivery } from "../../src/application/PushDelivery.js"
import { Readiness } from "../../src/application/Readiness.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import * as ProtobufCodec from "../../src/adapters/protobuf/FrameCodec.js"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { WsPacket as WsPacketFns } from "../../src/gen/gateway/v1/packet.js"

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

/** A Metrics port that records every call, for asserting that events are counted. */
export const recordingMetrics = () => {
  const events: Array<MetricEvent> = []
  const record = (name: keyof MetricsShape) => (...args: ReadonlyArray<unknown>) => {
    events.push({ name, args })
  }
  const shape = Object.fromEntries(Object.keys(Metrics.noop).map((name) => [name, record(name as keyof MetricsShape)])) as unknown as MetricsShape
  const count = (name: keyof MetricsShape) => events.filter((e) => e.name === name).length
  return { events, shape, count, layer: Layer.succeed(Metrics, shape) }
}

export interface CoreOptions {
  readonly logic?: Partial<LogicShape>
  /** A real Logic adapter instead of the fake one. */
  readonly logicLayer?: Layer.Layer<Logic, never, Metrics | InternalAuth.InternalAuth>
  readonly dispatcher?: DispatcherOptions
  readonly presence?: Partial<PresenceBatcherOptions>
  readonly metrics?: Layer.Layer<Metrics>
}

/** The application core with the protobuf codec and test Layers for the ports. */
export const coreLayer = (options: CoreOptions = {}) => {
  const metrics = options.metrics ?? Metrics.layerNoop
  const logic = options.logicLayer?.pipe(Layer.provide(Layer.merge(metrics, InternalAuth.layerTest))) ?? Logic.layerTest({ ...defaultLogic, ...options.logic })
  const ports = Layer.mergeAll(
    logic,
    ProtobufCodec.layer,
    metrics,
    GatewayIdentity.layer("gateway-test-001"),
    ConnectionHub.layer,
    Readiness.layer
  )
  const presence = PresenceBatcher.layer({ batchSize: 50, flushInterval: "100 millis", ...options.presence })
  const services = Layer.mergeAll(
    Dispatcher.layer(options.dispatcher).pipe(Layer.provideMerge(presence)),
    PushDelivery.layer,
    Authenticator.layer()
  )
  return services.pipe(Layer.provideMerge(ports))
}

const defaultLogic: Partial<LogicShape> = {
  syncStatus: () => Effect.void
}
