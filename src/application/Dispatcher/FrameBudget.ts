import type { Clock } from "effect"
import type { KeyedRateLimiter, TokenBucket } from "../../domain/RateLimit.js"
import { makeKeyedRateLimiter, newBucket, tryTake } from "../../domain/RateLimit.js"

/** A per-connection token bucket's parameters; `perSecond` 0 means unlimited. */
export interface Rate {
  readonly perSecond: number
  readonly burst: number
}

/** A rate and its burst from the options: the burst defaults to twice the rate, at least 1. */
export const rateOf = (perSecond: number | undefined, burst: number | undefined, fallback = 0): Rate => {
  const rate = perSecond ?? fallback
  return { perSecond: rate, burst: burst !== undefined && burst > 0 ? burst : Math.max(1, rate * 2) }
}

/** The frame budgets every connection of one Dispatcher draws on. */
export interface FrameLimits {
  readonly clock: Clock.Clock
  /** Chats per user, all devices together; undefined when chats are not limited. */
  readonly chatLimiter: KeyedRateLimiter | undefined
  /** Pulses and other control frames, per connection. */
  readonly pulse: Rate
  /** Delivery acks, per connection. */
  readonly ack: Rate
  /** Refused frames in a row after which the connection is closed. */
  readonly maxViolations: number
}

export const makeFrameLimits = (
  clock: Clock.Clock,
  options: {
    readonly chats: Rate
    readonly pulse: Rate
    readonly ack: Rate
    readonly maxViolations: number
  }
): FrameLimits => ({
  clock,
  chatLimiter: options.chats.perSecond > 0
    ? makeKeyedRateLimiter({ ratePerSecond: options.chats.perSecond, burst: options.chats.burst })
    : undefined,
  pulse: options.pulse,
  ack: options.ack,
  maxViolations: options.maxViolations
})

export type FrameKind = "chat" | "ack" | "control"

/**
 * One connection's rate admission: every frame takes a token, chats from the user's bucket (all
 * devices share it), acks and control frames (pulses, refused types) from this connection's.
 * Plain and allocation-free per frame; the buckets are made on first use.
 */
export class FrameBudget {
  private violations = 0
  private pulseBucket: TokenBucket | undefined = undefined
  private ackBucket: TokenBucket | undefined = undefined

  constructor(private readonly limits: FrameLimits, private readonly username: string) {}

  /** Takes a token for a frame of this kind; a taken token ends a run of refusals. */
  take(kind: FrameKind): boolean {
    const { limits } = this
    const now = limits.clock.unsafeCurrentTimeMillis()
    if (kind === "chat") {
      const limiter = limits.chatLimiter
      return this.taken(limiter === undefined || limiter.take(this.username, now) === 0)
    }
    if (kind === "ack") return this.takeFrom(limits.ack, (this.ackBucket ??= newBucket(limits.ack.burst, now)), now)
    return this.takeFrom(limits.pulse, (this.pulseBucket ??= newBucket(limits.pulse.burst, now)), now)
  }

  /** Counts a refused frame; false once there were too many in a row (the connection must close). */
  violate(): boolean {
    return ++this.violations < this.limits.maxViolations
  }

  private takeFrom(rate: Rate, bucket: TokenBucket, now: number): boolean {
    return this.taken(rate.perSecond <= 0 || tryTake(bucket, rate.perSecond, rate.burst, now))
  }

  private taken(ok: boolean): boolean {
    if (ok) this.violations = 0
    return ok
  }
}
