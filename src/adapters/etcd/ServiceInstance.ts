import { Config, Either, ParseResult, Schema } from "effect"
import { str } from "../platform/config/Settings.js"

/** The value stored under `<namespace>/<service-name>/<instance-id>` (WIRE.md, etcd service registry). */
export interface ServiceInstance {
  readonly id: string
  readonly name: string
  readonly version: string
  readonly metadata: Readonly<Record<string, string>>
  readonly endpoints: ReadonlyArray<string>
}

export const defaultNamespace = "/resonance/services"

/** `registry.namespace`: where entries live, read by the registry and by discovery. */
export const namespaceSetting = Config.nested(str("namespace", defaultNamespace), "registry")

// Lenient on what other registrars may omit (Go writes `"metadata": null` for a nil map).
const ServiceInstanceJson = Schema.parseJson(
  Schema.Struct({
    id: Schema.String,
    name: Schema.String,
    version: Schema.optionalWith(Schema.String, { default: () => "", nullable: true }),
    metadata: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), {
      default: () => ({}),
      nullable: true
    }),
    endpoints: Schema.Array(Schema.String)
  })
)

const decodeJson = Schema.decodeUnknownEither(ServiceInstanceJson)

/** Parses a registry value; `Left` carries a readable reason. */
export const decodeServiceInstance = (raw: string): Either.Either<ServiceInstance, string> =>
  Either.mapLeft(decodeJson(raw), (error) => ParseResult.TreeFormatter.formatErrorSync(error))

/** The exact JSON of WIRE.md, keys in its order. */
export const encodeServiceInstance = (instance: ServiceInstance): string =>
  JSON.stringify({
    id: instance.id,
    name: instance.name,
    version: instance.version,
    metadata: instance.metadata,
    endpoints: instance.endpoints
  })

const trimSlashes = (namespace: string) => namespace.replace(/\/+$/, "")

/** `<namespace>/<service-name>/`, the prefix listing every instance of one service. */
export const servicePrefix = (namespace: string, serviceName: string): string => `${trimSlashes(namespace)}/${serviceName}/`

export const instanceKey = (namespace: string, serviceName: string, instanceId: string): string =>
  `${servicePrefix(namespace, serviceName)}${instanceId}`

/**
 * The `host:port` to dial for an instance: the first endpoint that is `grpc://host:port` or a bare
 * `host:port`, without any path or query (`grpc://h:1?isSecure=false` gives `h:1`).
 */
export const grpcAddress = (instance: ServiceInstance): string | undefined => {
  for (const endpoint of instance.endpoints) {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(endpoint)
    if (scheme && scheme[1].toLowerCase() !== "grpc") continue
    const address = endpoint.slice(scheme ? scheme[0].length : 0).split(/[/?#]/, 1)[0]
    if (address.length > 0) return address
  }
  return undefined
}
