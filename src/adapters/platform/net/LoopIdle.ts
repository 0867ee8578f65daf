import { performance } from "node:perf_hooks"

/** Milliseconds the event loop has spent waiting with nothing to do, since the process started. */
export const loopIdleMs = (): number => performance.eventLoopUtilization().idle

/**
 * Readings of the event loop's idle time, taken at each sweep of the front door, that tell since
 * when the loop has caught up. libuv counts idle time only after a poll found nothing ready, so
 * idle time after a moment means every byte a client had sent by then has been read.
 */
export const makeLoopIdleReadings = (loopIdle: () => number = loopIdleMs, capacity = 64) => {
  const at: Array<number> = []
  const idle: Array<number> = []
  let idleNow = 0
  return {
    /** Takes a reading at `now`, keeping the last `capacity`. */
    read: (now: number): void => {
      idleNow = loopIdle()
      if (at.length === capacity) {
        at.shift()
        idle.shift()
      }
      at.push(now)
      idle.push(idleNow)
    },
    /**
     * The loop has been idle since any time up to this one, as far as the readings tell: the last
     * reading it has been idle after (readings only grow, so every earlier one too); -Infinity if none.
     */
    caughtUpSince: (): number => {
      for (let i = at.length - 1; i >= 0; i--) {
        if (idle[i]! < idleNow) return at[i]!
      }
      return -Infinity
    }
  }
}
