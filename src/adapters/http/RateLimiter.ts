import type { TokenBucket } from "../../domain/RateLimit.js"
import { newBucket, tryTake } from "../../domain/RateLimit.js"

export interface KeyedRateLimiterOptions {
  readonly ratePerSecond: number
  readonly burst: number
  /** Hard cap on tracked keys; the least recently used are dropped past it. */
  readonly maxKeys?: number
}

/**
 * One token bucket per key (client IP, username), plain and synchronous. The map is kept in
 * least-recently-used order, so idle buckets are found and evicted at its head: a bucket idle long
 * enough to be full again is indistinguishable from a new one.
 */
export interface KeyedRateLimiter {
  /** 0 when a token was taken; otherwise the whole seconds to wait before the next one. */
  readonly take: (key: string, now: number) => number
  readonly size: () => number
}

export const makeKeyedRateLimiter = (options: KeyedRateLimiterOptions): KeyedRateLimiter => {
  const { ratePerSecond, burst } = options
  const maxKeys = options.maxKeys ?? 100_000
  const buckets = new Map<string, TokenBucket>()
  const refillMillis = Math.max(1, (burst / ratePerSecond) * 1000)
  const sweepEvery = Math.min(refillMillis, 60_000)
  let lastSweep = 0

  const sweep = (now: number) => {
    lastSweep = now
    for (const [key, bucket] of buckets) {
      if (now - bucket.updatedAt < refillMillis) break
      buckets.delete(key)
    }
  }

  const take = (key: string, now: number): number => {
    if (now - lastSweep >= sweepEvery) sweep(now)
    let bucket = buckets.get(key)
    if (bucket === undefined) {
      bucket = newBucket(burst, now)
      if (buckets.size >= maxKeys) {
        const oldest = buckets.keys().next()
        if (!oldest.done) buckets.delete(oldest.value)
      }
    } else {
      buckets.delete(key)
    }
    buckets.set(key, bucket)
    if (tryTake(bucket, ratePerSecond, burst, now)) return 0
    return Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerSecond))
  }

  return { take, size: () => buckets.size }
}
