import { afterAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { configDirectory, parseDotEnv } from "../../src/adapters/platform/config/GatewayConfig.js"
import { parseDuration } from "../../src/adapters/platform/config/Settings.js"
import { loadConfig, loadConfigReport } from "../../src/gateway-config.js"

const upstream = Path.resolve(import.meta.dirname, "../fixtures/upstream-configs")

const made: Array<string> = []
afterAll(() => made.forEach((directory) => Fs.rmSync(directory, { recursive: true, force: true })))

const withDir = (files: Record<string, string>) => {
  const directory = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-config-"))
  made.push(directory)
  for (const [name, content] of Object.entries(files)) Fs.writeFileSync(Path.join(directory, name), content)
  return directory
}

describe("configuration", () => {
  it.effect("with nothing configured: embedded mode on 8080 with the contract's defaults", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({ directory: withDir({}), environment: {} })
      expect(config.service).toMatchObject({ name: "gateway-service", httpPort: 8080, grpcPort: 15091 })
      expect(config.etcd.endpoints).toEqual([])
      expect(config.ws.maxMessageSize).toBe(1024 * 1024)
      expect(Duration.toSeconds(config.ws.pingInterval)).toBe(30)
      expect(Duration.toSeconds(config.ws.pongTimeout)).toBe(60)
      expect(config.statusBatcher.batchSize).toBe(50)
      expect(Duration.toMillis(config.statusBatcher.flushInterval)).toBe(100)
      expect(config.observability.metrics).toMatchObject({ port: 9092, path: "/metrics" })
      expect(Duration.toSeconds(config.registry.defaultTtl)).toBe(30)
      expect(config.embedded.databasePath).toBe("./data/resonance.db")
      expect(config.logicServiceName).toBe("logic-service")
      expect(config.auth.secretKey).toBeUndefined()
    }))

  it.effect("reads the Go gateway's YAML keys", () =>
    Effect.gen(function*() {
      const directory = withDir({
        "gateway.yaml": [
          "service:",
          "  name: gw-east",
          "  http_port: 9000",
          "ws_config:",
          "  max_message_size: 65536",
          "  ping_interval: 10s",
          "  pong_timeout: 1m30s",
          "status_batcher:",
          "  flush_interval: 250ms",
          "etcd:",
          "  endpoints: [\"10.0.0.1:2379\", \"10.0.0.2:2379\"]",
          "registry:",
          "  default_ttl: 15s",
          "observability:",
          "  trace:",
          "    endpoint: collector:4318",
          "    sampler: 0.25"
        ].join("\n")
      })
      const config = yield* loadConfig({ directory, environment: {} })
      expect(config.service.name).toBe("gw-east")
      expect(config.service.httpPort).toBe(9000)
      expect(config.ws.maxMessageSize).toBe(65536)
      expect(Duration.toSeconds(config.ws.pingInterval)).toBe(10)
      expect(Duration.toSeconds(config.ws.pongTimeout)).toBe(90)
      expect(Duration.toMillis(config.statusBatcher.flushInterval)).toBe(250)
      expect(config.etcd.endpoints).toEqual(["10.0.0.1:2379", "10.0.0.2:2379"])
      expect(Duration.toSeconds(config.registry.defaultTtl)).toBe(15)
      expect(config.observability.trace).toMatchObject({ endpoint: "collector:4318", sampler: 0.25, enabled: true })
    }))

  it.effect("precedence: environment > .env > gateway.<env>.yaml > gateway.yaml", () =>
    Effect.gen(function*() {
      const directory = withDir({
        "gateway.yaml": "service:\n  http_port: 1001\n  grpc_port: 2001\n  name: from-base\nlog:\n  level: debug\n",
        "gateway.prod.yaml": "service:\n  http_port: 1002\n  grpc_port: 2002\n",
        ".env": "RESONANCE_ENV=prod\nRESONANCE_SERVICE_HTTP_PORT=1003 # from .env\n"
      })
      const fromFiles = yield* loadConfig({ directory, environment: {} })
      expect(fromFiles.service.httpPort).toBe(1003)
      expect(fromFiles.service.grpcPort).toBe(2002)
      expect(fromFiles.service.name).toBe("from-base")
      expect(fromFiles.log.level).toBe("debug")
      const withEnv = yield* loadConfig({ directory, environment: { RESONANCE_SERVICE_HTTP_PORT: "1004", PATH: "/bin" } })
      expect(withEnv.service.httpPort).toBe(1004)
    }))

  it.effect("environment names are RESONANCE_ + the key path; lists are comma-separated", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        directory: withDir({}),
        environment: {
          RESONANCE_SECURITY_IP_DENY: "10.0.0.0/8,127.0.0.2/32",
          RESONANCE_LIMITS_MAX_CONNECTIONS_PER_IP: "5",
          RESONANCE_LIMITS_MAX_CONNECTIONS: "1000",
          RESONANCE_EMBEDDED_DATABASE_PATH: "/tmp/x.db",
          RESONANCE_AUTH_SECRET_KEY: "s3cret-that-is-long-enough-for-hs256!",
          RESONANCE_WS_CONFIG_MAX_MESSAGE_SIZE: "2048",
          RESONANCE_OBSERVABILITY_TRACE_DISABLE: "true",
          RESONANCE_OBSERVABILITY_METRICS_PATH: "/prom"
        }
      })
      expect(config.security.ipDeny).toEqual(["10.0.0.0/8", "127.0.0.2/32"])
      expect(config.limits.maxConnectionsPerIp).toBe(5)
      expect(config.limits.maxConnections).toBe(1000)
      expect(config.embedded.databasePath).toBe("/tmp/x.db")
      expect(config.auth.secretKey).toBe("s3cret-that-is-long-enough-for-hs256!")
      expect(config.ws.maxMessageSize).toBe(2048)
      expect(config.observability.trace.enabled).toBe(false)
      expect(config.observability.metrics.path).toBe("/prom")
    }))

  it.effect("the defaults are safe to expose: internal port on loopback, no push in embedded mode, production caps", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({ directory: withDir({}), environment: {} })
      expect(config.service.grpcHost).toBe("127.0.0.1")
      expect(config.push.enabled).toBeUndefined()
      expect(config.internal).toMatchObject({ token: "", insecure: false })
      expect(config.limits).toMatchObject({
        maxDevicesPerUser: 5,
        maxConnectionsPerIp: 100,
        maxMessageBytes: 65_536,
        messagesPerSecond: 10,
        maxGroupMembers: 500,
        failedLoginsPerUserPerIp: 5,
        loginsInFlightPerIp: 2
      })
      expect(Duration.toSeconds(config.http.headersTimeout)).toBe(10)
      expect(Duration.toSeconds(config.http.requestTimeout)).toBe(30)
      // Connections and requests a stranger can make us hold are bounded by default.
      expect(config.http).toMatchObject({ maxConnectionsPerIp: 256, requestsPerIpPerSecond: 100, maxPipelinedRequests: 16 })
      expect(config.observability.metrics.host).toBe("127.0.0.1")
      const short = yield* Effect.flip(
        loadConfig({ directory: withDir({}), environment: { RESONANCE_AUTH_SECRET_KEY: "too-short" } })
      )
      expect(String(short)).toContain("auth.secret_key")
    }))

  it.effect("a bad value is a clear configuration error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        loadConfig({ directory: withDir({}), environment: { RESONANCE_WS_CONFIG_PING_INTERVAL: "soon" } })
      )
      expect(String(error)).toContain("invalid duration")
      const badPort = yield* Effect.flip(
        loadConfig({ directory: withDir({}), environment: { RESONANCE_SERVICE_HTTP_PORT: "eighty" } })
      )
      expect(String(badPort)).toMatch(/HTTP_PORT/)
    }))

  it.effect("a program's own defaults sit below every source", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        directory: withDir({}),
        environment: { RESONANCE_SERVICE_GRPC_PORT: "7000" },
        defaults: { RESONANCE_SERVICE_NAME: "logic-service", RESONANCE_SERVICE_GRPC_PORT: "15090" }
      })
      expect(config.service.name).toBe("logic-service")
      expect(config.service.grpcPort).toBe(7000)
    }))

  it.effect("upstream's configs/gateway.yaml loads unchanged: console logs, advertised localhost, OTLP/gRPC on 4317", () =>
    Effect.gen(function*() {
      const { config, report } = yield* loadConfigReport({ directory: upstream, environment: { HOSTNAME: "gw-pod-7" } })
      expect(report.files).toEqual([Path.join(upstream, "gateway.yaml")])
      expect(report.etcdEndpointsFrom).toBe(Path.join(upstream, "gateway.yaml"))
      expect(config.log).toEqual({ format: "pretty", level: "debug" })
      expect(config.service).toMatchObject({ advertiseHost: "localhost", bindHost: "0.0.0.0", httpPort: 8080, grpcPort: 15091 })
      // Advertised on the loopback: the internal port may stay there.
      expect(config.service.grpcHost).toBe("127.0.0.1")
      expect(config.etcd.endpoints).toEqual(["127.0.0.1:2379"])
      expect(Duration.toSeconds(config.ws.pingInterval)).toBe(30)
      expect(Duration.toSeconds(config.ws.pongTimeout)).toBe(60)
      expect(config.observability.trace).toMatchObject({ enabled: false, endpoint: "localhost:4317", insecure: true, protocol: "auto" })
    }))

  it.effect("upstream's prod overlay: service.host empty means $HOSTNAME, then localhost; the internal port opens with it", () =>
    Effect.gen(function*() {
      const prod = yield* loadConfig({ directory: upstream, environment: { RESONANCE_ENV: "prod", HOSTNAME: "gw-pod-7" } })
      expect(prod.log.format).toBe("json")
      expect(prod.etcd.endpoints).toEqual(["etcd:2379"])
      expect(prod.service.advertiseHost).toBe("gw-pod-7")
      expect(prod.service.grpcHost).toBe("0.0.0.0")
      expect(prod.observability.trace).toMatchObject({ enabled: true, endpoint: "otel-collector:4317", sampler: 0.1 })
      const noHostname = yield* loadConfig({ directory: upstream, environment: { RESONANCE_ENV: "prod" } })
      expect(noHostname.service.advertiseHost).toBe("localhost")
      const pinned = yield* loadConfig({
        directory: upstream,
        environment: { RESONANCE_ENV: "prod", HOSTNAME: "gw-pod-7", RESONANCE_SERVICE_GRPC_HOST: "10.1.2.3" }
      })
      expect(pinned.service.grpcHost).toBe("10.1.2.3")
      // Embedded mode never opens the internal port by itself, whatever the host.
      const embedded = yield* loadConfig({ directory: withDir({}), environment: { HOSTNAME: "gw-pod-7" } })
      expect(embedded.service).toMatchObject({ advertiseHost: "gw-pod-7", grpcHost: "127.0.0.1" })
    }))

  it("the configuration directory: RESONANCE_CONFIG_DIR, else ./configs, else the working directory", () => {
    const root = withDir({})
    expect(configDirectory(root, {})).toBe(root)
    Fs.mkdirSync(Path.join(root, "configs"))
    expect(configDirectory(root, {})).toBe(Path.join(root, "configs"))
    expect(configDirectory(root, { RESONANCE_CONFIG_DIR: "/etc/resonance" })).toBe("/etc/resonance")
    expect(configDirectory(root, { RESONANCE_CONFIG_DIR: "elsewhere" })).toBe(Path.join(root, "elsewhere"))
  })

  it.effect("the report names the files read and where etcd.endpoints came from", () =>
    Effect.gen(function*() {
      const directory = withDir({ "gateway.yaml": "log:\n  format: console\n", ".env": "RESONANCE_ETCD_ENDPOINTS=10.0.0.9:2379\n" })
      const { config, report } = yield* loadConfigReport({ directory, environment: {} })
      expect(report.files).toEqual([Path.join(directory, "gateway.yaml"), Path.join(directory, ".env")])
      expect(report.etcdEndpointsFrom).toBe(Path.join(directory, ".env"))
      expect(config.log.format).toBe("pretty")
      const fromEnv = yield* loadConfigReport({ directory, environment: { RESONANCE_ETCD_ENDPOINTS: "e:2379" } })
      expect(fromEnv.report.etcdEndpointsFrom).toBe("environment")
      const none = yield* loadConfigReport({ directory: withDir({}), environment: {} })
      expect(none.report).toMatchObject({ files: [], etcdEndpointsFrom: undefined })
    }))

  it("parses Go durations and plain seconds", () => {
    expect(Either.map(parseDuration("100ms"), Duration.toMillis)).toEqual(Either.right(100))
    // Go's three spellings of microseconds: us, the micro sign and the Greek mu.
    for (const micro of ["1500us", "1500\u00b5s", "1500\u03bcs"]) {
      expect(Either.map(parseDuration(micro), Duration.toMillis)).toEqual(Either.right(1.5))
    }
    expect(Either.map(parseDuration("1h2m3s"), Duration.toSeconds)).toEqual(Either.right(3723))
    expect(Either.map(parseDuration("45"), Duration.toSeconds)).toEqual(Either.right(45))
    expect(Either.isLeft(parseDuration("10 parsecs"))).toBe(true)
  })

  it("parses .env files like dotenv", () => {
    const parsed = parseDotEnv("# comment\nexport A=1\nB = \"two words\"\nC='x#y'\nD=z # note\nE=\"quoted\" # note\n\nbroken line\n")
    expect(Object.fromEntries(parsed)).toEqual({ A: "1", B: "two words", C: "x#y", D: "z", E: "quoted" })
  })
})
