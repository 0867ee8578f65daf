/** 2020-01-01T00:00:00Z: a recent epoch keeps ids within a signed int64 until the 2080s. */
export const SNOWFLAKE_EPOCH_MS = 1_577_836_800_000

const WORKER_BITS = 10n
const SEQUENCE_BITS = 12n
const MAX_SEQUENCE = (1 << Number(SEQUENCE_BITS)) - 1
export const MAX_WORKER_ID = (1 << Number(WORKER_BITS)) - 1

export interface SnowflakeParts {
  readonly timestampMs: number
  readonly workerId: number
  readonly sequence: number
}

export interface Snowflake {
  /** A new id, strictly greater than every id this generator returned before. */
  readonly next: (nowMs: number) => bigint
}

/**
 * `(ms since epoch) << 22 | worker << 12 | sequence`. When the clock goes back, or 4096 ids
 * were taken in one millisecond, the generator keeps counting on its own last millisecond
 * instead of waiting, so ids stay monotonic.
 */
/** `workerId` is masked to its 10 bits; callers validate it. */
export const makeSnowflake = (workerId: number, lastId: bigint = 0n): Snowflake => {
  const worker = BigInt(workerId & MAX_WORKER_ID) << SEQUENCE_BITS
  let lastMs = lastId > 0n ? Number(lastId >> (WORKER_BITS + SEQUENCE_BITS)) : -1
  let sequence = lastId > 0n ? Number(lastId & BigInt(MAX_SEQUENCE)) : 0
  let last = lastId

  const compose = () => (BigInt(lastMs) << (WORKER_BITS + SEQUENCE_BITS)) | worker | BigInt(sequence)

  return {
    next: (nowMs) => {
      const elapsed = Math.max(0, Math.floor(nowMs) - SNOWFLAKE_EPOCH_MS)
      if (elapsed > lastMs) {
        lastMs = elapsed
        sequence = 0
      } else if (sequence < MAX_SEQUENCE) {
        sequence++
      } else {
        lastMs++
        sequence = 0
      }
      // Seeded from an id of another worker (higher worker bits), the same millisecond could
      // give a smaller id: an inbox cursor would skip it. Move to the next millisecond instead.
      if (compose() <= last) {
        lastMs++
        sequence = 0
      }
      last = compose()
      return last
    }
  }
}

/** The smallest id any worker hands out at unix time `ms` (0 before the epoch). */
export const firstIdAt = (ms: number): bigint => {
  const elapsed = Math.floor(ms) - SNOWFLAKE_EPOCH_MS
  return elapsed <= 0 ? 0n : BigInt(elapsed) << (WORKER_BITS + SEQUENCE_BITS)
}

export const snowflakeParts = (id: bigint): SnowflakeParts => ({
  timestampMs: Number(id >> (WORKER_BITS + SEQUENCE_BITS)) + SNOWFLAKE_EPOCH_MS,
  workerId: Number((id >> SEQUENCE_BITS) & BigInt(MAX_WORKER_ID)),
  sequence: Number(id & BigInt(MAX_SEQUENCE))
})
