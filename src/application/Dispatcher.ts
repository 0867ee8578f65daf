import { Clock, Context, Duration, Effect, Fiber, Layer, Queue, Schedule } from "effect"
import type { Scope } from "effect"
import { CloseCodes } from "../domain/Connection.js"
import type { ChatRequest } from "../domain/Model.js"
import type { Packet } from "../domain/Packet.js"
import { ackPacket, classifyInbound, errorAck } from "../domain/Packet.js"
import { newBucket, tryTake } from "../domain/RateLimit.js"
import type { LiveConnection } from "./ConnectionHub.js"
import { ConnectionHub } from "./ConnectionHub.js"
import { FrameCodec, isFault } from "./ports/FrameCodec.js"
import { Logic } from "./ports/Logic.js"
import { Metrics } from "./ports/Metrics.js"
import { PresenceBatcher } from "./PresenceBatcher.js"

export interface DispatcherOptions {
  /** Frames of one connection waiting to be handled; past this, frames are refused. */
  readonly maxPendingFrames?: number
  /** Deadline of one Logic.sendMessage call, after which the chat is acked with an error. */
  readonly chatTimeout?: Duration.DurationInput
  /** Chat frames per second per connection (0 = unlimited) and the burst allowed above it. */
  readonly messagesPerSecond?: number
  readonly messageBurst?: number
  /** Rate-limited frames in a row after which the connection is closed. */
  readonly maxRateViolations?: number
}

export interface ConnectionStats {
  /** Frames accepted from the client. */
  received: number
  /** Push deliveries the client confirmed with an `ack` frame. */
  deliveriesConfirmed: number
  lastConfirmedMsgId: bigint
}

export interface ConnectionHandle {
  /** Called by the socket adapter for every binary frame; plain and non-blocking. */
  readonly receive: (frame: Uint8Array) => void
  /** Stops taking frames and answers those already taken (graceful drain). */
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void>
  readonly stats: Readonly<ConnectionStats>
}

export interface DispatcherShape {
  /**
   * Attaches a connection for the life of the scope: registers it in the hub, announces presence,
   * and handles its frames in arrival order on one fiber of its own.
   */
  readonly attach: (connection: LiveConnection) => Effect.Effect<ConnectionHandle, never, Scope.Scope>
}

export class Dispatcher extends Context.Tag("resonance/Dispatcher")<Dispatcher, DispatcherShape>() {
  static readonly layer = (options: DispatcherOptions = {}) =>
    Layer.effect(
      Dispatcher,
      Effect.gen(function*() {
        const hub = yield* ConnectionHub
        const codec = yield* FrameCodec
        const logic = yield* Logic
        const metrics = yield* Metrics
        const presence = yield* PresenceBatcher
        const maxPending = options.maxPendingFrames ?? 64
        const chatTimeout = Duration.decode(options.chatTimeout ?? "5 seconds")
        const rate = options.messagesPerSecond ?? 0
        const burst = options.messageBurst ?? Math.max(1, rate * 2)
        const maxViolations = options.maxRateViolations ?? 20

        const attach = (connection: LiveConnection) =>
          Effect.gen(function*() {
            const { info } = connection
            const stats: ConnectionStats = { received: 0, deliveriesConfirmed: 0, lastConfirmedMsgId: 0n }
            const inbox = yield* Queue.bounded<Packet>(maxPending)
            const bucket = newBucket(burst, Date.now())
            let violations = 0
            let accepting = true
            let busy = false

            const reply = (packet: Packet) => connection.send(codec.encode(packet))

            const forward = (seq: string, chat: ChatRequest) =>
              logic.sendMessage(chat, { connectionId: info.id }).pipe(
                Effect.timeoutFail({
                  duration: chatTimeout,
                  onTimeout: () => ({ code: "deadline_exceeded", message: "logic did not answer in time" }) as const
                }),
                Effect.match({
                  onFailure: (error) => errorAck(seq, error.message || error.code, chat.sessionId),
                  onSuccess: (result) =>
                    ackPacket(seq, { msgId: result.msgId, seqId: result.seqId, sessionId: chat.sessionId, error: "" })
                }),
                Effect.map(reply),
                Effect.withSpan("Dispatcher.chat", {
                  attributes: { "chat.session_id": chat.sessionId, "chat.seq": seq, "user.name": info.username }
                })
              )

            const handle = (packet: Packet) =>
              Effect.suspend(() => {
                const now = BigInt(Math.floor(Date.now() / 1000))
                const decision = classifyInbound(packet, info.username, now)
                switch (decision._tag) {
                  case "ReplyPulse":
                    metrics.pulse()
                    reply(decision.reply)
                    return Effect.void
                  case "ForwardChat":
                    metrics.messageReceived()
                    return forward(decision.seq, decision.chat)
                  case "RecordDelivery":
                    stats.deliveriesConfirmed++
                    if (decision.msgId > stats.lastConfirmedMsgId) stats.lastConfirmedMsgId = decision.msgId
                    return Effect.void
                  case "Reject":
                    reply(decision.reply)
                    return Effect.void
                }
              })

            const receive = (frame: Uint8Array) => {
              if (!accepting) return
              const decoded = codec.decode(frame)
              if (isFault(decoded)) {
                if (decoded._tag === "Malformed") {
                  connection.close(CloseCodes.InvalidPayload, "malformed frame: not a WsPacket")
                } else if (decoded.seq !== "") {
                  reply(errorAck(decoded.seq, "unknown packet type"))
                } else {
                  connection.close(CloseCodes.UnsupportedData, "unknown packet type")
                }
                return
              }
              if (rate > 0 && decoded.payload?.$case === "chat") {
                if (!tryTake(bucket, rate, burst, Date.now())) {
                  if (++violations >= maxViolations) {
                    connection.close(CloseCodes.RateLimited, "too many messages")
                  } else {
                    reply(errorAck(decoded.seq, "rate limited: too many messages", decoded.payload.value.sessionId))
                  }
                  return
                }
                violations = 0
              }
              if (!inbox.unsafeOffer(decoded)) {
                reply(errorAck(decoded.seq, "too many pending frames"))
                return
              }
              stats.received++
            }

            const consume = Queue.take(inbox).pipe(
              Effect.tap(() => Effect.sync(() => (busy = true))),
              Effect.flatMap(handle),
              Effect.ensuring(Effect.sync(() => (busy = false))),
              Effect.forever
            )

            metrics.connectionOpened()
            if (hub.add(connection).first) presence.online(info.username, info.remoteAddress)
            yield* Effect.addFinalizer(() =>
              Effect.sync(() => {
                accepting = false
                metrics.connectionClosed()
                if (hub.remove(connection).last) presence.offline(info.username)
              })
            )
            const consumer = yield* Effect.forkScoped(consume)

            if (info.expiresAt !== undefined) {
              const now = yield* Clock.currentTimeMillis
              yield* Effect.forkScoped(
                Effect.sleep(Duration.millis(Math.max(0, info.expiresAt - now))).pipe(
                  Effect.zipRight(Effect.sync(() => connection.close(CloseCodes.TokenExpired, "token expired")))
                )
              )
            }

            const drain = (timeout: Duration.DurationInput) =>
              Effect.suspend(() => {
                accepting = false
                return Effect.gen(function*() {
                  const size = yield* Queue.size(inbox)
                  return size <= 0 && !busy
                }).pipe(
                  Effect.repeat({ schedule: Schedule.spaced("10 millis"), until: (idle) => idle }),
                  Effect.timeout(timeout),
                  Effect.ignore,
                  Effect.zipRight(Fiber.interrupt(consumer)),
                  Effect.asVoid
                )
              })

            return { receive, drain, stats } satisfies ConnectionHandle
          })

        return { attach }
      })
    )
}
