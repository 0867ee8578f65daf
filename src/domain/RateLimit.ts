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
