import { Cause, Clock, Context, Duration, Effect, Either, Exit, Layer, Option, Random, Runtime, Schedule } from "effect"
import type { Fiber, Scope, Tracer } from "effect"
import { CloseCodes } from "../domain/Connection.js"
import type { LogicError } from "../domain/Errors.js"
import { ackErrorText } from "../domain/Errors.js"
import type { ChatRequest, SendMessageResult } from "../domain/Model.js"
import type { Packet } from "../domain/Packet.js"
import { ackPacket, classifyInbound, errorAck } from "../domain/Packet.js"
import type { ChatRules } from "../domain/Packet.js"
import type { KeyedRateLimiter, TokenBucket } from "../domain/RateLimit.js"
import { makeKeyedRateLimiter, newBucket, tryTake } from "../domain/RateLimit.js"
import type { LiveConnection } from "./ConnectionHub.js"
import { ConnectionHub } from "./ConnectionHub.js"
import type { FrameCodecShape } from "./ports/FrameCodec.js"
import { FrameCodec, isFault } from "./ports/FrameCodec.js"
import type { ChatItem, ChatOrigin, LogicShape } from "./ports/Logic.js"
import { Logic } from "./ports/Logic.js"
import type { MetricsShape } from "./ports/Metrics.js"
import { Metrics } from "./ports/Metrics.js"
import { PresenceBatcher } from "./PresenceBatcher.js"

export interface DispatcherOptions {
  /** Frames of one connection waiting behind a chat in flight past which its reads pause. */
  readonly maxPendingFrames?: number
  /** Bytes of frames waiting behind a chat in flight past which its reads pause. */
  readonly maxPendingBytes?: number
  /**
   * Deadline of one Logic.sendMessage call, after which the chat is acked with an error; zero
   * leaves it to the Logic adapter (an in-process Logic, or a gRPC one with its own deadline).
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
   * A span and a fiber per chat under the session's span (default false: the chats of a turn go to
   * Logic as one batch). Worth it only when traces are exported: even Effect's native tracer
   * allocates a span, its ids and attributes for every chat.
   */
  readonly traceChats?: boolean
}

export interface ConnectionHandle {
  /** Called by the socket adapter for every binary frame; plain and non-blocking. */
  readonly receive: (frame: Uint8Array) => void
  /** Stops taking frames and answers those already taken (graceful drain). */
  readonly drain: (timeout: Duration.DurationInput) => Effect.Effect<void>
}

/** A connection opened with the plain `open`; `close` is idempotent. */
export interface ConnectionSession extends ConnectionHandle {
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
  readonly attach: (connection: LiveConnection) => Effect.Effect<ConnectionHandle, never, Scope.Scope>
}

/** Failures that are Logic's, not the client's: worth a warning. */
const outage = (code: string) => code === "unavailable" || code === "deadline_exceeded" || code === "internal"

const logicTimedOut = { code: "deadline_exceeded" as const, message: "logic did not answer in time" }
const internalError = { code: "internal" as const, message: "internal error" }

/**
 * A chat Logic failed to store, said once for its batch with whom it concerned. No log
 * annotations around the calls themselves: they cost ~11 KB of garbage per chat.
 */
const logOutage = (connections: ReadonlyArray<LiveConnection>, error: Pick<LogicError, "code" | "message">) =>
  Effect.logWarning("chats not stored: Logic failed").pipe(
    Effect.annotateLogs({
      code: error.code,
      error: error.message,
      chats: connections.length,
      user: connections[0]?.info.username ?? "",
      connection: connections[0]?.info.id ?? 0
    })
  )

/** A chat waiting for its batch: what Logic needs (a ChatItem), and who to answer. */
interface PendingChat extends ChatItem {
  readonly state: ConnectionState
  readonly seq: string
}

/** A per-connection token bucket's parameters; `perSecond` 0 means unlimited. */
interface Rate {
  readonly perSecond: number
  readonly burst: number
}

const rateOf = (perSecond: number | undefined, burst: number | undefined, fallback: number): Rate => {
  const rate = perSecond ?? fallback
  return { perSecond: rate, burst: burst !== undefined && burst > 0 ? burst : Math.max(1, rate * 2) }
}

/** What every connection shares: built once per Dispatcher. */
interface Shared {
  readonly codec: FrameCodecShape
  readonly logic: LogicShape
  readonly metrics: MetricsShape
  readonly clock: Clock.Clock
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
  readonly maxPendingFrames: number
  readonly maxPendingBytes: number
  readonly chatTimeout: Duration.Duration
  /** Per user; undefined when chats are not limited. */
  readonly chatLimiter: KeyedRateLimiter | undefined
  readonly pulse: Rate
  readonly ack: Rate
  readonly maxViolations: number
  readonly rules: ChatRules
  /** Random per Dispatcher: idempotency keys of one boot never meet those of another. */
  readonly bootId: string
  readonly traceChats: boolean
  /** Queues a chat for the batch of this turn: one Effect for all of them (untraced chats only). */
  readonly submit: (chat: PendingChat) => void
  /** Unregisters a connection that closed. */
  readonly closed: (connection: LiveConnection) => void
}

/**
 * One connection's frame handling, kept plain so an idle socket costs a few small objects and no
 * fiber: frames are handled synchronously, a chat runs as one short-lived fiber, and frames that
 * arrive while it is in flight wait in order behind it.
 */
class ConnectionState implements ConnectionSession {
  private pending: Array<Packet> | undefined = undefined
  private pendingSizes: Array<number> | undefined = undefined
  private pendingBytes = 0
  private paused = false
  private inFlight = false
  private active = true
  private accepting = true
  private violations = 0
  private pulseBucket: TokenBucket | undefined = undefined
  private ackBucket: TokenBucket | undefined = undefined

  constructor(
    readonly connection: LiveConnection,
    private readonly shared: Shared,
    private readonly parentSpan: Tracer.AnySpan | undefined
  ) {}

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
    this.shared.closed(this.connection)
  }

  /**
   * Every frame takes a token: chats from the user's bucket (all devices share it), acks and
   * control frames (pulses, refused types) from this connection's. A refused frame is not handled;
   * a run of them closes the connection.
   */
  private admit(packet: Packet): boolean {
    const { shared } = this
    const kind = packet.payload?.$case
    if (kind === "chat") {
      const limiter = shared.chatLimiter
      if (limiter === undefined || limiter.take(this.connection.info.username, shared.clock.unsafeCurrentTimeMillis()) === 0) {
        this.violations = 0
        return true
      }
      if (this.violate()) this.reply(errorAck(packet.seq, "rate limited: too many messages", packet.payload!.value.sessionId))
      return false
    }
    if (kind === "ack") {
      if (this.take(shared.ack, (this.ackBucket ??= newBucket(shared.ack.burst, shared.clock.unsafeCurrentTimeMillis())))) return true
      this.violate()
      return false
    }
    return this.admitControl()
  }

  private admitControl(): boolean {
    const { pulse, clock } = this.shared
    if (this.take(pulse, (this.pulseBucket ??= newBucket(pulse.burst, clock.unsafeCurrentTimeMillis())))) return true
    this.violate()
    return false
  }

  private take(rate: Rate, bucket: TokenBucket): boolean {
    if (rate.perSecond <= 0 || tryTake(bucket, rate.perSecond, rate.burst, this.shared.clock.unsafeCurrentTimeMillis())) {
      this.violations = 0
      return true
    }
    return false
  }

  /** Counts a refused frame; false (and the connection closed) once there were too many in a row. */
  private violate(): boolean {
    if (++this.violations < this.shared.maxViolations) return true
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
    const { metrics, clock, rules } = this.shared
    const now = BigInt(Math.floor(clock.unsafeCurrentTimeMillis() / 1000))
    const decision = classifyInbound(packet, this.connection.info.username, now, rules)
    switch (decision._tag) {
      case "ReplyPulse":
        metrics.pulse()
        this.reply(decision.reply)
        return
      case "ForwardChat":
        metrics.messageReceived()
        this.inFlight = true
        if (this.shared.traceChats) {
          this.shared.runFork(this.forward(decision.seq, decision.chat)).addObserver(() => this.settled())
        } else {
          this.shared.submit({ state: this, seq: decision.seq, chat: decision.chat, origin: this.originOf(decision.seq) })
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

  /** A retry of this send (by the Logic client, or the client resending its seq here) is stored once. */
  originOf(seq: string): ChatOrigin {
    const { id } = this.connection.info
    return seq === "" ? { connectionId: id } : { connectionId: id, idempotencyKey: `${this.shared.bootId}:${id}:${seq}` }
  }

  /** Acks a chat; the error when it was Logic's fault (an operator should hear of it). */
  answer(seq: string, chat: ChatRequest, result: Either.Either<SendMessageResult, Pick<LogicError, "code" | "message">>) {
    if (Either.isRight(result)) {
      this.reply(ackPacket(seq, { msgId: result.right.msgId, seqId: result.right.seqId, sessionId: chat.sessionId, error: "" }))
      return undefined
    }
    const error = result.left
    this.reply(errorAck(seq, ackErrorText(error), chat.sessionId))
    return outage(error.code) ? error : undefined
  }

  settled(): void {
    this.inFlight = false
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
    const call = logic.sendMessage(chat, this.originOf(seq))
    const bounded: Effect.Effect<SendMessageResult, Pick<LogicError, "code" | "message">> = Duration.isZero(chatTimeout)
      ? call
      : Effect.timeoutFail(call, { duration: chatTimeout, onTimeout: () => logicTimedOut })
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

/** Connections by the second their token expires; one ticker closes them, not a timer each. */
class ExpiryWheel {
  private readonly bySecond = new Map<number, Set<LiveConnection>>()

  constructor(private readonly onFirstEntry: () => void) {}

  get isEmpty(): boolean {
    return this.bySecond.size === 0
  }

  add(connection: LiveConnection, expiresAt: number): void {
    const second = Math.ceil(expiresAt / 1000)
    if (this.bySecond.size === 0) this.onFirstEntry()
    let due = this.bySecond.get(second)
    if (due === undefined) this.bySecond.set(second, (due = new Set()))
    due.add(connection)
  }

  remove(connection: LiveConnection, expiresAt: number): void {
    const second = Math.ceil(expiresAt / 1000)
    const due = this.bySecond.get(second)
    if (due === undefined) return
    due.delete(connection)
    if (due.size === 0) this.bySecond.delete(second)
  }

  expire(now: number): void {
    const second = Math.floor(now / 1000)
    for (const [at, due] of this.bySecond) {
      if (at > second) continue
      this.bySecond.delete(at)
      for (const connection of due) connection.close(CloseCodes.TokenExpired, "token expired")
    }
  }
}

export class Dispatcher extends Context.Tag("resonance/Dispatcher")<Dispatcher, DispatcherShape>() {
  static readonly layer = (options: DispatcherOptions = {}) =>
    Layer.scoped(
      Dispatcher,
      Effect.gen(function*() {
        const hub = yield* ConnectionHub
        const presence = yield* PresenceBatcher
        const runtime = yield* Effect.runtime<never>()
        const rate = options.messagesPerSecond ?? 0
        const chatBurst = options.messageBurst !== undefined && options.messageBurst > 0 ? options.messageBurst : Math.max(1, rate * 2)
        // The ticker sleeps on a latch while no connection carries an expiry.
        const hasEntries = yield* Effect.makeLatch(false)
        const expiry = new ExpiryWheel(() => hasEntries.unsafeOpen())
        const metrics = yield* Metrics
        const logic = yield* Logic
        const chatTimeout = Duration.decode(options.chatTimeout ?? "5 seconds")

        // The chats of one turn go to Logic as one batch, in one fiber: per frame no Effect runs.
        let batch: Array<PendingChat> = []
        const sendBatch = () => {
          const chats = batch
          batch = []
          const answered = new Array<boolean>(chats.length).fill(false)
          let failure: Pick<LogicError, "code" | "message"> | undefined
          const failed: Array<LiveConnection> = []
          // Each chat is acked the moment its result is known, then its connection goes on.
          const answer = (i: number, result: Either.Either<SendMessageResult, Pick<LogicError, "code" | "message">>) => {
            if (answered[i]) return
            answered[i] = true
            const { state, seq, chat } = chats[i]!
            const outcome = state.answer(seq, chat, result)
            if (outcome !== undefined) {
              failure ??= outcome
              failed.push(state.connection)
            }
            state.settled()
          }
          const call = logic.sendMessages(chats, answer)
          const bounded = Duration.isZero(chatTimeout) ? call : Effect.timeout(call, chatTimeout)
          shared.runFork(bounded).addObserver((exit) => {
            // What timed out, failed or died unanswered is answered with an error.
            const missing = Exit.isSuccess(exit) ? undefined : Either.left(Cause.isFailType(exit.cause) ? logicTimedOut : internalError)
            if (missing !== undefined) for (let i = 0; i < chats.length; i++) answer(i, missing)
            if (failure !== undefined) shared.runFork(logOutage(failed, failure))
          })
        }

        const shared: Shared = {
          codec: yield* FrameCodec,
          logic,
          metrics,
          clock: yield* Effect.clock,
          runFork: Runtime.runFork(runtime),
          maxPendingFrames: options.maxPendingFrames ?? 64,
          maxPendingBytes: options.maxPendingBytes ?? 256 * 1024,
          chatTimeout,
          chatLimiter: rate > 0 ? makeKeyedRateLimiter({ ratePerSecond: rate, burst: chatBurst }) : undefined,
          pulse: rateOf(options.pulsesPerSecond, options.pulseBurst, 0),
          ack: rateOf(options.acksPerSecond, options.ackBurst, 0),
          maxViolations: options.maxRateViolations ?? 20,
          rules: { maxContentBytes: options.maxContentBytes ?? 64 * 1024 },
          traceChats: options.traceChats ?? false,
          submit: (chat) => {
            if (batch.length === 0) setImmediate(sendBatch)
            batch.push(chat)
          },
          bootId: `${(yield* Clock.currentTimeMillis).toString(36)}-${(yield* Random.nextIntBetween(0, 2 ** 30)).toString(36)}`,
          closed: (connection) => {
            const { info } = connection
            if (info.expiresAt !== undefined) expiry.remove(connection, info.expiresAt)
            metrics.connectionClosed()
            if (hub.remove(connection).last) presence.offline(info.username)
          }
        }
        const tick = Effect.zipRight(
          hasEntries.close,
          Effect.suspend(() =>
            expiry.isEmpty
              ? hasEntries.await
              : Effect.zipRight(
                Effect.sleep("1 second"),
                Effect.sync(() => expiry.expire(shared.clock.unsafeCurrentTimeMillis()))
              )
          )
        )
        yield* Effect.forkScoped(Effect.forever(tick))

        const open = (connection: LiveConnection, parentSpan?: Tracer.AnySpan): ConnectionSession => {
          const { info } = connection
          const state = new ConnectionState(connection, shared, parentSpan)
          metrics.connectionOpened()
          if (hub.add(connection).first) presence.online(info.username, info.remoteAddress)
          if (info.expiresAt !== undefined) expiry.add(connection, info.expiresAt)
          return state
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
