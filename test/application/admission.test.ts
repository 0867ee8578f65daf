import { describe, expect, it } from "@effect/vitest"
import { makeAdmission } from "../../src/application/Admission.js"
import { ConnectionRegistry } from "../../src/application/ConnectionHub.js"
import { CloseCodes } from "../../src/domain/Connection.js"
import { fakeConnection } from "../support/helpers.js"

const limits = { maxConnections: 0, maxConnectionsPerIp: 0, maxDevicesPerUser: 0 }

describe("Admission", () => {
  it("counts pending upgrades and open connections against the global limit", () => {
    const admission = makeAdmission({ ...limits, maxConnections: 2 }, new ConnectionRegistry())
    expect(admission.begin("10.0.0.1")).toBeUndefined()
    admission.authenticated()
    admission.connected("alice")
    expect(admission.begin("10.0.0.2")).toBeUndefined()
    expect(admission.begin("10.0.0.3")).toBe("global_limit")
    admission.abandon("10.0.0.2")
    expect(admission.begin("10.0.0.3")).toBeUndefined()
    admission.authenticated()
    admission.connected("bob")
    admission.disconnected("10.0.0.1")
    expect(admission.begin("10.0.0.4")).toBeUndefined()
  })

  it("limits connections per client key, an IPv6 address by its /64, and gives slots back", () => {
    const admission = makeAdmission({ ...limits, maxConnectionsPerIp: 1 }, new ConnectionRegistry())
    expect(admission.begin("2001:db8::1")).toBeUndefined()
    expect(admission.begin("2001:db8::2")).toBe("ip_limit")
    expect(admission.begin("10.0.0.1")).toBeUndefined()
    admission.abandon("2001:db8::1")
    expect(admission.begin("2001:db8::2")).toBeUndefined()
    admission.authenticated()
    admission.connected("alice")
    admission.disconnected("2001:db8::2")
    expect(admission.begin("2001:db8::3")).toBeUndefined()
  })

  it("closes the user's oldest devices past the device limit, and only them", () => {
    const hub = new ConnectionRegistry()
    const admission = makeAdmission({ ...limits, maxDevicesPerUser: 2 }, hub)
    const [first, second] = [fakeConnection("alice"), fakeConnection("alice")]
    // `connected` comes before the Dispatcher adds the new connection to the hub.
    admission.connected("alice")
    hub.add(first)
    admission.connected("alice")
    hub.add(second)
    expect(first.closes).toEqual([])
    admission.connected("alice") // a third device
    expect(first.closes).toEqual([{ code: CloseCodes.DeviceLimit, reason: "device limit reached: a newer device connected" }])
    expect(second.closes).toEqual([])
  })
})
