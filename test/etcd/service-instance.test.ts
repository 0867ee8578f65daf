import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import {
  decodeServiceInstance,
  encodeServiceInstance,
  grpcAddress,
  instanceKey,
  servicePrefix
} from "../../src/adapters/etcd/ServiceInstance.js"

const instance = (endpoints: Array<string>) => ({ id: "i", name: "s", version: "", metadata: {}, endpoints })

describe("ServiceInstance", () => {
  it("encodes the WIRE.md JSON with its key order", () => {
    expect(
      encodeServiceInstance({
        endpoints: ["grpc://h:1"],
        metadata: { http_addr: "h:2", ws_addr: "h:3" },
        version: "v",
        name: "gateway-service",
        id: "gateway-service-001"
      })
    ).toBe(
      "{\"id\":\"gateway-service-001\",\"name\":\"gateway-service\",\"version\":\"v\",\"metadata\":{\"http_addr\":\"h:2\",\"ws_addr\":\"h:3\"},\"endpoints\":[\"grpc://h:1\"]}"
    )
  })

  it("decodes what Go registrars write, null metadata and missing version included", () => {
    expect(decodeServiceInstance("{\"id\":\"a\",\"name\":\"logic-service\",\"metadata\":null,\"endpoints\":[\"h:1\"],\"extra\":1}")).toEqual(
      Either.right({ id: "a", name: "logic-service", version: "", metadata: {}, endpoints: ["h:1"] })
    )
  })

  it("rejects values that are not JSON or miss required fields", () => {
    expect(Either.isLeft(decodeServiceInstance("{not json"))).toBe(true)
    expect(Either.isLeft(decodeServiceInstance("{\"id\":\"a\",\"name\":\"n\"}"))).toBe(true)
    expect(Either.isLeft(decodeServiceInstance("{\"id\":1,\"name\":\"n\",\"endpoints\":[]}"))).toBe(true)
  })

  it("takes the first grpc:// or bare endpoint, without scheme, path or query", () => {
    expect(grpcAddress(instance(["grpc://10.0.0.1:9000"]))).toBe("10.0.0.1:9000")
    expect(grpcAddress(instance(["10.0.0.2:9001"]))).toBe("10.0.0.2:9001")
    expect(grpcAddress(instance(["http://10.0.0.3:80", "grpc://10.0.0.3:9002?isSecure=false"]))).toBe("10.0.0.3:9002")
    expect(grpcAddress(instance(["http://10.0.0.4:80"]))).toBeUndefined()
    expect(grpcAddress(instance([]))).toBeUndefined()
  })

  it("builds keys under the namespace, tolerating a trailing slash", () => {
    expect(servicePrefix("/resonance/services/", "logic-service")).toBe("/resonance/services/logic-service/")
    expect(instanceKey("/resonance/services", "gateway-service", "gateway-service-001")).toBe(
      "/resonance/services/gateway-service/gateway-service-001"
    )
  })
})
