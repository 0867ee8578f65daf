import { Duration, Effect, Either, Schedule } from "effect"
import type { Fiber, Tracer } from "effect"
import { CloseCodes } from "../../domain/Connection.js"
import { ackErrorText } from "../../domain/Errors.js"
import type { ChatRequest, SendMessageResult } from "../../domain/Model.js"
import type { ChatRules, Packet } from "../../domain/Packet.js"
import { ackPacket, classifyInbound, errorAck } from "../../domain/Packet.js"
import type { ConnectionRegistry } from "../ConnectionHub.js"
import type { LiveConnection } from "../ports/LiveConnection.js"
import type { ConnectionSession } from "../Dispatcher.js"
import type { FrameCodecShape } from "../ports/FrameCodec.js"
import { isFault } from "../ports/FrameCodec.js"
import type { LogicShape } from "../ports/Logic.js"
import type { MetricsShape } from "../ports/Metrics.js"
import type { ChatFailure, PendingChat } from "./ChatBatch.js"
import { isOutage, logOutage, withinChatTimeout } from "./ChatBatch.js"
import type { FrameLimits } from "./FrameBudget.js"
import { FrameBudget } from "./FrameBudget.js"
import type { PushGateLimits } from "./PushGate.js"
import { ConnectionPushGate } from "./PushGate.js"

/** What every connection of one Dispatcher shares: built once. */
export interface Shared {
  readonly codec: FrameCodecShape
  readonly logic: LogicShape
  readonly metrics: MetricsShape
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  readonly maxPendingFrames: number
  readonly maxPendingBytes: number
  readonly chatTimeout: Duration.Duration
  readonly limits: FrameLimits
  readonly rules: ChatRules
  /** Random per Dispatcher: idempotency keys of one boot never meet those of another. */
  readonly bootId: string
  readonly traceChats: boolean
  /** Hands a chat to Logic: with the others of this turn, or at once (untraced chats only; see ChatBatch). */
  readonly submit: (chat: PendingChat) => void
  /** Unregisters a connection that closed. */
  readonly closed: (connection: LiveConnection) => void
  /** Where a connection's push gate is set while its chats are answered. */
  readonly hub: ConnectionRegistry
  readonly pushGate: PushGateLimits
}

/**
 * One connection's frame handling, kept plain so an idle socket costs a few small objects and no
 * fiber: frames are handled synchronously, a chat goes to Logic with the others of its turn
 * (ChatBatch: plainly for an in-process Logic, a fiber per call otherwise), and frames that arrive
 * while it is in flight wait in order behind it.
 */
export class Session implements ConnectionSession {
  private pending: Array<Packet> | undefined = undefined
  private pendingSizes: Array<number> | undefined = undefined
  private pendingBytes = 0
  private paused = false
  private inFlight = false
  private active = true
  private accepting = true
  private readonly budget: FrameBudget
  /** Made on the first chat: a connection that never sends one is never gated. */
  private gate: ConnectionPushGate | undefined = undefined

  constructor(
    readonly connection: LiveConnection,
    private readonly shared: Shared,
    private readonly parentSpan: Tracer.AnySpan | undefined
  ) {
    this.budget = new FrameBudget(shared.limits, connection.info.username)
  }

  receive(frame: Uint8Array): void {
    if (!this.active) return
    const decoded = this.shared.codec.decode(frame)
    if (isFault(decoded)) {
      if (decoded._tag === "Malformed") {
        this.connection.close(CloseCodes.InvalidPayload, "malformed frame: not a WsPacket")
      } else if (decoded.seq !== "" && this.admitControl()) {
        this.reply(errorAck(decoded.seq, "unknown packet type"))
      } else if (decoded.seq === "") {
        this.connection.close(CloseCodes.UnsupportedData, "unknown packet type")
      }
      return
    }
    if (!this.admit(decoded)) return
    if (!this.accepting) {
      // Draining: a chat that came too late is answered, so the client knows to send it again
      // after reconnecting instead of waiting for an ack that never comes.
      if (decoded.payload?.$case === "chat") {
        this.reply(errorAck(decoded.seq, "gateway is shutting down: send again after reconnecting", decoded.payload.value.sessionId))
      }
      return
    }
    if (this.inFlight) {
      this.enqueue(decoded, frame.byteLength)
      return
    }
    this.handle(decoded)
  }

  drain(timeout: Duration.DurationInput): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.accepting = false
      return Effect.sync(() => !this.inFlight && (this.pending === undefined || this.pending.length === 0)).pipe(
        Effect.repeat({ schedule: Schedule.spaced("10 millis"), until: (idle) => idle }),
        Effect.timeout(timeout),
        Effect.ignore
      )
    })
  }

  close(): void {
    if (!this.active) return
    this.active = false
    this.accepting = false
    this.pending = undefined
    this.pendingSizes = undefined
    this.gate?.close()
    this.shared.closed(this.connection)
  }

  /** A frame refused by the budget is not handled; a run of them closes the connection. */
  private admit(packet: Packet): boolean {
    const kind = packet.payload?.$case
    if (this.budget.take(kind === "chat" ? "chat" : kind === "ack" ? "ack" : "control")) return true
    if (this.refused() && kind === "chat") {
      this.reply(errorAck(packet.seq, "rate limited: too many messages", packet.payload!.value.sessionId))
    }
    return false
  }

  private admitControl(): boolean {
    if (this.budget.take("control")) return true
    this.refused()
    return false
  }

  /** Counts a refused frame; false (and the connection closed) once there were too many in a row. */
  private refused(): boolean {
    if (this.budget.violate()) return true
    this.connection.close(CloseCodes.RateLimited, "too many messages")
    return false
  }

  /** Queues a frame behind the chat in flight; past the budget the socket stops being read. */
  private enqueue(packet: Packet, bytes: number): void {
    const { maxPendingBytes, maxPendingFrames } = this.shared
    const pending = (this.pending ??= [])
    const sizes = (this.pendingSizes ??= [])
    // Reads pause well before this; only frames the socket had already buffered can get here.
    if (pending.length > 0 && this.pendingBytes + bytes > maxPendingBytes * 4) {
      this.reply(errorAck(packet.seq, "too many pending frames"))
      return
    }
    pending.push(packet)
    sizes.push(bytes)
    this.pendingBytes += bytes
    if (!this.paused && (this.pendingBytes >= maxPendingBytes || pending.length >= maxPendingFrames)) {
      this.paused = true
      this.connection.pauseReads()
    }
  }

  private reply(packet: Packet): boolean {
    return this.connection.send(this.shared.codec.encode(packet))
  }

  private handle(packet: Packet): void {
    const { metrics, limits, rules } = this.shared
    const now = BigInt(Math.floor(limits.clock.unsafeCurrentTimeMillis() / 1000))
    const decision = classifyInbound(packet, this.connection.info.username, now, rules)
    switch (decision._tag) {
      case "ReplyPulse":
        metrics.pulse()
        this.reply(decision.reply)
        return
      case "ForwardChat":
        metrics.messageReceived()
        this.inFlight = true
        this.holdPushes()
        if (this.shared.traceChats) {
          this.shared.runFork(this.forward(decision.seq, decision.chat)).addObserver(() => this.settled())
        } else {
          this.shared.submit({ session: this, seq: decision.seq, chat: decision.chat, idempotencyKey: this.keyOf(decision.seq) })
        }
        return
      case "RecordDelivery":
        // A delivery ack needs no answer; it only spends the connection's ack budget.
        return
      case "Reject":
        this.reply(decision.reply)
        return
    }
  }

  /** The chat's echo may come before its ack: the connection's pushes wait for the answer. */
  private holdPushes(): void {
    const { hub, limits, pushGate } = this.shared
    this.gate ??= new ConnectionPushGate(this.connection, hub, limits.clock, pushGate)
    this.gate.hold()
  }

  /** A retry of this send (by the Logic client, or the client resending its seq here) is stored once. */
  keyOf(seq: string): string | undefined {
    return seq === "" ? undefined : `${this.shared.bootId}:${this.connection.info.id}:${seq}`
  }

  /** Acks a chat; the error when it was Logic's fault (an operator should hear of it). */
  answer(seq: string, chat: ChatRequest, result: Either.Either<SendMessageResult, ChatFailure>): ChatFailure | undefined {
    if (Either.isRight(result)) {
      this.reply(ackPacket(seq, { msgId: result.right.msgId, seqId: result.right.seqId, sessionId: chat.sessionId, error: "" }))
      this.gate?.answered(result.right.msgId)
      return undefined
    }
    const error = result.left
    this.reply(errorAck(seq, ackErrorText(error), chat.sessionId))
    this.gate?.answered(undefined)
    return isOutage(error.code) ? error : undefined
  }

  settled(): void {
    this.inFlight = false
    // A chat that ended unanswered (its fiber died) must not keep the pushes held.
    if (this.gate?.isHolding) this.gate.answered(undefined)
    const pending = this.pending
    const sizes = this.pendingSizes
    if (pending === undefined || sizes === undefined) return
    while (!this.inFlight && pending.length > 0) {
      this.pendingBytes -= sizes.shift()!
      this.handle(pending.shift()!)
    }
    const { maxPendingBytes, maxPendingFrames } = this.shared
    if (this.paused && this.active && this.pendingBytes < maxPendingBytes / 2 && pending.length < maxPendingFrames / 2) {
      this.paused = false
      this.connection.resumeReads()
    }
  }

  private forward(seq: string, chat: ChatRequest): Effect.Effect<void> {
    const { logic, chatTimeout } = this.shared
    const { info } = this.connection
    const key = this.keyOf(seq)
    const call = logic.sendMessage(chat, key === undefined ? undefined : { idempotencyKey: key })
    const bounded: Effect.Effect<SendMessageResult, ChatFailure> = withinChatTimeout(call, chatTimeout)
    const answered = Effect.flatMap(Effect.either(bounded), (result) => {
      const failure = this.answer(seq, chat, result)
      return failure === undefined ? Effect.void : logOutage([this.connection], failure)
    })
    return (this.shared.traceChats
      ? Effect.withSpan(answered, "Dispatcher.chat", {
        parent: this.parentSpan ?? this.connection.sessionSpan?.(),
        captureStackTrace: false,
        attributes: { "chat.session_id": chat.sessionId, "chat.seq": seq, "user.name": info.username }
      })
      : answered)
  }
}
