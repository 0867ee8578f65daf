import { describe, expect, it } from "@effect/vitest"
import { makeSnowflake, SNOWFLAKE_EPOCH_MS, snowflakeParts } from "../../src/adapters/logic-embedded/Snowflake.js"

const t0 = Date.parse("2025-01-01T00:00:00Z")

describe("Snowflake", () => {
  it("lays out milliseconds, worker and sequence", () => {
    const snowflake = makeSnowflake(5)
    const a = snowflake.next(t0)
    const b = snowflake.next(t0)
    expect(snowflakeParts(a)).toEqual({ timestampMs: t0, workerId: 5, sequence: 0 })
    expect(snowflakeParts(b)).toEqual({ timestampMs: t0, workerId: 5, sequence: 1 })
    expect(a >> 22n).toBe(BigInt(t0 - SNOWFLAKE_EPOCH_MS))
    expect(a < 2n ** 63n).toBe(true)
  })

  it("stays monotonic when the clock goes back and when a millisecond runs out of sequence", () => {
    const snowflake = makeSnowflake(1)
    const ids = [snowflake.next(t0 + 1000), snowflake.next(t0), snowflake.next(t0 - 5000)]
    for (let i = 0; i < 5000; i++) ids.push(snowflake.next(t0 + 1000))
    ids.push(snowflake.next(t0 + 999_999))
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true)
    expect(snowflakeParts(ids[2]!).timestampMs).toBe(t0 + 1000)
  })

  it("continues after an id of another worker it is seeded with, in the same millisecond", () => {
    const other = makeSnowflake(900).next(t0)
    const ours = makeSnowflake(3, other)
    const next = ours.next(t0)
    expect(next > other).toBe(true)
    expect(snowflakeParts(next).workerId).toBe(3)
  })

  it("continues after the last id it is seeded with, even if the clock is behind", () => {
    const previous = makeSnowflake(0).next(t0 + 60_000)
    const resumed = makeSnowflake(0, previous)
    expect(resumed.next(t0) > previous).toBe(true)
  })
})
