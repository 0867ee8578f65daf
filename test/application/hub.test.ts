import { describe, expect, it } from "@effect/vitest"
import { ConnectionRegistry, isDeviceSet } from "../../src/application/ConnectionHub.js"
import { fakeConnection } from "../support/helpers.js"

describe("ConnectionRegistry", () => {
  it("holds several devices per user and reports the first", () => {
    const hub = new ConnectionRegistry()
    const phone = fakeConnection("alice")
    const laptop = fakeConnection("alice")
    expect(hub.add(phone)).toEqual({ first: true })
    expect(hub.add(laptop)).toEqual({ first: false })
    expect([...hub.connectionsOf("alice")!]).toEqual([phone, laptop])
    expect(hub.connectionCount).toBe(2)
    expect(hub.userCount).toBe(1)
  })

  it("add is idempotent", () => {
    const hub = new ConnectionRegistry()
    const phone = fakeConnection("alice")
    hub.add(phone)
    expect(hub.add(phone)).toEqual({ first: false })
    expect(hub.connectionCount).toBe(1)
  })

  it("remove is idempotent and reports the last device", () => {
    const hub = new ConnectionRegistry()
    const phone = fakeConnection("alice")
    const laptop = fakeConnection("alice")
    hub.add(phone)
    hub.add(laptop)
    expect(hub.remove(phone)).toEqual({ last: false })
    expect(hub.remove(phone)).toEqual({ last: false })
    expect(hub.remove(laptop)).toEqual({ last: true })
    expect(hub.connectionsOf("alice")).toBeUndefined()
    expect(hub.connectionCount).toBe(0)
  })

  it("a closing old socket never removes a newer one of the same user", () => {
    const hub = new ConnectionRegistry()
    const old = fakeConnection("alice")
    const newer = fakeConnection("alice")
    hub.add(old)
    hub.add(newer)
    hub.remove(old)
    expect([...hub.connectionsOf("alice")!]).toEqual([newer])
  })

  it("removing a connection that was never added changes nothing", () => {
    const hub = new ConnectionRegistry()
    const alice = fakeConnection("alice")
    hub.add(alice)
    expect(hub.remove(fakeConnection("alice"))).toEqual({ last: false })
    expect(hub.connectionCount).toBe(1)
  })

  it("lists users and every connection", () => {
    const hub = new ConnectionRegistry()
    const a = fakeConnection("a")
    const b1 = fakeConnection("b")
    const b2 = fakeConnection("b")
    for (const c of [a, b1, b2]) hub.add(c)
    expect([...hub.users()].sort()).toEqual(["a", "b"])
    expect([...hub.connections()]).toEqual([a, b1, b2])
  })

  it("keeps a lone device without a set, makes one for the second and drops it at one again", () => {
    const hub = new ConnectionRegistry()
    const phone = fakeConnection("alice")
    const laptop = fakeConnection("alice")
    const tablet = fakeConnection("alice")
    hub.add(phone)
    expect(hub.devicesOf("alice")).toBe(phone)
    expect(hub.deviceCount("alice")).toBe(1)
    expect([...hub.connectionsOf("alice")!]).toEqual([phone])

    hub.add(laptop)
    hub.add(tablet)
    const devices = hub.devicesOf("alice")!
    expect(isDeviceSet(devices) ? [...devices] : devices).toEqual([phone, laptop, tablet])
    expect(hub.deviceCount("alice")).toBe(3)

    hub.remove(laptop)
    expect(hub.deviceCount("alice")).toBe(2)
    expect(hub.remove(phone)).toEqual({ last: false })
    // One device left: held as itself again, and still removable.
    expect(hub.devicesOf("alice")).toBe(tablet)
    expect(hub.connectionCount).toBe(1)
    expect(hub.remove(tablet)).toEqual({ last: true })
    expect(hub.devicesOf("alice")).toBeUndefined()
    expect(hub.deviceCount("alice")).toBe(0)
    expect(hub.connectionCount).toBe(0)
  })
})
