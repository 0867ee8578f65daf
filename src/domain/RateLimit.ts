/**
 * A token bucket: `ratePerSecond` tokens refill continuously up to `burst`.
 * Pure state and arithmetic; the caller supplies the clock.
 */
export interface TokenBucket {
  tokens: number
  updatedAt: number
}

export const newBucket = (burst: number, now: number): TokenBucket => ({ tokens: burst, updatedAt: now })

/** Takes one token if there is one; mutates the bucket in place (it sits on a hot path). */
export const tryTake = (bucket: TokenBucket, ratePerSecond: number, burst: number, now: number): boolean => {
  const elapsed = Math.max(0, now - bucket.updatedAt) / 1000
  bucket.tokens = Math.min(burst, bucket.tokens + elapsed * ratePerSecond)
  bucket.updatedAt = now
  if (bucket.tokens < 1) return false
  bucket.tokens -= 1
  return true
}

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
  /** What `take` would answer, without taking: for budgets spent only on failures. */
  readonly retryAfter: (key: string, now: number) => number
  /** Forgets the key: its next bucket starts full. */
  readonly reset: (key: string) => void
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

  const retryAfter = (key: string, now: number): number => {
    const bucket = buckets.get(key)
    if (bucket === undefined) return 0
    const tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.updatedAt) / 1000) * ratePerSecond)
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / ratePerSecond))
  }

  return { take, retryAfter, reset: (key) => void buckets.delete(key), size: () => buckets.size }
}

/**
 * The key one client is limited under: an IPv4 address itself, an IPv6 address by its /64 (what
 * one subscriber is routed, so rotating the interface id buys no new budget). Expects the
 * canonical text of an address.
 */
export const clientKeyOf = (ip: string): string => {
  if (!ip.includes(":")) return ip
  const halves = ip.split("::")
  const head = halves[0] === "" ? [] : halves[0]!.split(":")
  const tail = halves.length > 1 && halves[1] !== "" ? halves[1]!.split(":") : []
  const groups = halves.length > 1 ? [...head, ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill("0"), ...tail] : head
  return `${groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, "")).join(":")}::/64`
}
