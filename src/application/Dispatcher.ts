import { Clock, Context, Duration, Effect, Layer, Option, Random, Runtime } from "effect"
import type { Scope, Tracer } from "effect"
import { defaultChatRules } from "../domain/Packet.js"
import type { LiveConnection } from "./ports/LiveConnection.js"
import { ConnectionHub } from "./ConnectionHub.js"
import { makeChatBatcher } from "./Dispatcher/ChatBatch.js"
import type { Shared } from "./Dispatcher/Session.js"
import { Session } from "./Dispatcher/Session.js"
import { makeExpiryWheel } from "./Dispatcher/ExpiryWheel.js"
import { makeFrameLimits, rateOf } from "./Dispatcher/FrameBudget.js"
import { defaultPushGateLimits } from "./Dispatcher/PushGate.js"
import { FrameCodec } from "./ports/FrameCodec.js"
import { Logic } from "./ports/Logic.js"
import { Metrics } from "./ports/Metrics.js"
import { PresenceBatcher } from "./PresenceBatcher.js"

export interface DispatcherOptions {
  /** Frames of one connection waiting behind a chat in flight past which its reads pause. */
  readonly maxPendingFrames?: number
  /** Bytes of frames waiting behind a chat in flight past which its reads pause. */
  readonly maxPendingBytes?: number
  /**
   * Deadline of one call to Logic, after which its chats are acked with an error; zero leaves it
   * to the Logic adapter (an in-process Logic, or a gRPC one with its own deadline).
   */
  readonly chatTimeout?: Duration.DurationInput
  /** Chat frames per second per user, all devices together (0 = unlimited), and the burst above it. */
  readonly messagesPerSecond?: number
  readonly messageBurst?: number
  /** Pulses and other control frames per second per connection (0 = unlimited), and the burst. */
  readonly pulsesPerSecond?: number
  readonly pulseBurst?: number
  /** Delivery acks per second per connection (0 = unlimited), and the burst. */
  readonly acksPerSecond?: number
  readonly ackBurst?: number
  /** Limited frames in a row after which the connection is closed with 4008. */
  readonly maxRateViolations?: number
  /** Largest chat content, in UTF-8 bytes. */
  readonly maxContentBytes?: number
  /**
   * A span and a fiber per chat under the session's span (default false: chats go to Logic through
   * ChatBatch, a turn's at once). Worth it only when traces are exported: even Effect's native tracer
   * allocates a span, its ids and attributes for every chat.
   */
  readonly traceChats?: boolean
  /** Pushes, and their bytes, held for a connection while its chat is in flight (its echo may come first). */
  readonly maxHeldPushes?: number
  readonly maxHeldPushBytes?: number
  /** msg_ids a connection remembers having been acked, and for how long: a push of one is its own echo. */
  readonly echoMemory?: number
  readonly echoMemoryTime?: Duration.DurationInput
}

/** A connection as the Dispatcher serves it, from `open` (or `attach`) to `close`. */
export interface ConnectionSession {
  /** Called by the socket adapter for every binary frame; plain and non-blocking. */
  readonly receive: (frame: Uint8Array) => void
  /** Stops taking frames and answers those already taken (graceful drain). */
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void>
  /** Idempotent; `attach` calls it when its scope closes. */
  readonly close: () => void
}

export interface DispatcherShape {
  /**
   * Opens a connection: registers it in the hub, announces presence and handles its frames in
   * arrival order until `close`. Plain, so a socket adapter enters no Effect per connection;
   * `parentSpan`, or else the connection's `sessionSpan()` asked on its first traced chat, parents
   * every chat span.
   */
  readonly open: (connection: LiveConnection, parentSpan?: Tracer.AnySpan) => ConnectionSession
  /** `open` for the life of the scope; the current span parents the chat spans. */
  readonly attach: (connection: LiveConnection) => Effect.Effect<ConnectionSession, never, Scope.Scope>
}

/**
 * The use case behind every client connection: frames in arrival order, chats to Logic, acks back.
 * Its parts: `Dispatcher/Session` (one connection's frames), `FrameBudget` (rate
 * admission), `ChatBatch` (chats to Logic: a turn's in one call, or each in its own), `PushGate`
 * (a connection's own pushes while its chat is answered), `ExpiryWheel` (token expiry).
 *
 * A chat frame's way: Session.receive (decode, budget, order; the connection's pushes held) →
 * ChatBatch → `Logic.sendMessagesNow` (in-process) or `Logic.sendMessages` → per-message results
 * → Session.answer (the ack; held pushes follow it, but the chat's own echo). A message Logic
 * committed reaches the other sockets through PushDelivery: from the Task service over
 * PushService, or from an in-process Logic through the `Committed` queue
 * (`PushDelivery.layerCommitted`), after the acks of its turn.
 */
export class Dispatcher extends Context.Tag("resonance/Dispatcher")<Dispatcher, DispatcherShape>() {
  static readonly layer = (options: DispatcherOptions = {}) =>
    Layer.scoped(
      Dispatcher,
      Effect.gen(function*() {
        const hub = yield* ConnectionHub
        const presence = yield* PresenceBatcher
        const runtime = yield* Effect.runtime<never>()
        const expiry = yield* makeExpiryWheel
        const metrics = yield* Metrics
        const logic = yield* Logic
        const chatTimeout = Duration.decode(options.chatTimeout ?? "5 seconds")
        const runFork = Runtime.runFork(runtime)

        const shared: Shared = {
          codec: yield* FrameCodec,
          logic,
          metrics,
          runFork,
          maxPendingFrames: options.maxPendingFrames ?? 64,
          maxPendingBytes: options.maxPendingBytes ?? 256 * 1024,
          chatTimeout,
          limits: makeFrameLimits(yield* Effect.clock, {
            chats: rateOf(options.messagesPerSecond, options.messageBurst),
            pulse: rateOf(options.pulsesPerSecond, options.pulseBurst),
            ack: rateOf(options.acksPerSecond, options.ackBurst),
            maxViolations: options.maxRateViolations ?? 20
          }),
          rules: { maxContentBytes: options.maxContentBytes ?? defaultChatRules.maxContentBytes },
          traceChats: options.traceChats ?? false,
          submit: makeChatBatcher(logic, chatTimeout, runFork),
          hub,
          pushGate: {
            maxHeldPushes: options.maxHeldPushes ?? defaultPushGateLimits.maxHeldPushes,
            maxHeldBytes: options.maxHeldPushBytes ?? defaultPushGateLimits.maxHeldBytes,
            echoMemory: Math.max(1, options.echoMemory ?? defaultPushGateLimits.echoMemory),
            echoMemoryMillis: options.echoMemoryTime === undefined
              ? defaultPushGateLimits.echoMemoryMillis
              : Duration.toMillis(options.echoMemoryTime)
          },
          bootId: `${(yield* Clock.currentTimeMillis).toString(36)}-${(yield* Random.nextIntBetween(0, 2 ** 30)).toString(36)}`,
          closed: (connection) => {
            const { info } = connection
            if (info.expiresAt !== undefined) expiry.remove(connection, info.expiresAt)
            metrics.connectionClosed()
            if (hub.remove(connection).last) presence.offline(info.username)
          }
        }

        const open = (connection: LiveConnection, parentSpan?: Tracer.AnySpan): ConnectionSession => {
          const { info } = connection
          const session = new Session(connection, shared, parentSpan)
          metrics.connectionOpened()
          if (hub.add(connection).first) presence.online(info.username, info.remoteAddress)
          if (info.expiresAt !== undefined) expiry.add(connection, info.expiresAt)
          return session
        }

        const attach = (connection: LiveConnection) =>
          Effect.flatMap(Effect.option(Effect.currentParentSpan), (span) =>
            Effect.acquireRelease(
              Effect.sync(() => open(connection, Option.getOrUndefined(span))),
              (session) => Effect.sync(() => session.close())
            ))

        return { open, attach }
      })
    )
}
