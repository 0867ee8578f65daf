import { describe, expect, it } from "@effect/vitest"
import { foldPresence, offline, online } from "../../src/domain/Presence.js"

describe("foldPresence", () => {
  it("splits events into online and offline batches", () => {
    const folded = foldPresence([online("a", "1.1.1.1", 1n), offline("b", 2n)])
    expect(folded.online).toEqual([{ username: "a", remoteIp: "1.1.1.1", timestamp: 1n }])
    expect(folded.offline).toEqual([{ username: "b", timestamp: 2n }])
  })

  it("keeps only the last state of a user", () => {
    const folded = foldPresence([online("a", "ip", 1n), offline("a", 2n), online("a", "ip2", 3n)])
    expect(folded.online).toEqual([{ username: "a", remoteIp: "ip2", timestamp: 3n }])
    expect(folded.offline).toEqual([])
  })

  it("a user who came and went ends offline", () => {
    const folded = foldPresence([online("a", "ip", 1n), offline("a", 2n)])
    expect(folded.online).toEqual([])
    expect(folded.offline).toEqual([{ username: "a", timestamp: 2n }])
  })

  it("keeps every distinct user", () => {
    const events = Array.from({ length: 500 }, (_, i) => online(`u${i}`, "ip", BigInt(i)))
    const folded = foldPresence(events)
    expect(folded.online.map((u) => u.username)).toEqual(events.map((e) => e.username))
  })

  it("an empty input folds to empty batches", () => {
    expect(foldPresence([])).toEqual({ online: [], offline: [] })
  })
})
