import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type { ConfigSources } from "../../src/adapters/platform/config/GatewayConfig.js"
import { collect, providerFromSettings } from "../../src/adapters/platform/config/GatewayConfig.js"
import * as HttpConfig from "../../src/adapters/http/HttpApi.js"
import { sharedLimitSettings } from "../../src/adapters/platform/config/Settings.js"
import * as WsConfig from "../../src/adapters/ws/WebSocketGateway.js"

/** A slice read under the provider `main.ts` installs: files in a fresh directory, then the environment. */
const underSources = <A, E, R>(effect: Effect.Effect<A, E, R>, files: Record<string, string>, environment: Record<string, string>) =>
  Effect.gen(function*() {
    const directory = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-slices-"))
    for (const [name, text] of Object.entries(files)) Fs.writeFileSync(Path.join(directory, name), text)
    const sources: ConfigSources = { directory, environment }
    const { settings } = yield* collect(sources)
    return yield* Effect.withConfigProvider(effect, providerFromSettings(settings)).pipe(
      Effect.ensuring(Effect.sync(() => Fs.rmSync(directory, { recursive: true, force: true })))
    )
  })

// The slice fails before the Layer asks for any service, so the requirements are never provided.
const buildFailure = <ROut, E, RIn>(layer: Layer.Layer<ROut, E, RIn>) =>
  Effect.flip(Effect.scoped(Layer.build(layer as unknown as Layer.Layer<ROut, E>)))

describe("each adapter reads its own configuration slice", () => {
  it.effect("the WebSocket slice: its defaults, a YAML value, and the environment above the YAML", () =>
    Effect.gen(function*() {
      const defaults = yield* underSources(WsConfig.wsOptionsConfig, {}, {})
      expect(defaults).toMatchObject({
        path: "/ws",
        maxMessageSize: 1024 * 1024,
        sendBufferLimit: 4 * 1024 * 1024,
        maxConnections: 0,
        maxConnectionsPerIp: 100,
        maxDevicesPerUser: 5,
        compression: { enabled: false, threshold: 1024, concurrencyLimit: 4 },
        drainSeconds: 3,
        closeMode: "reconnect"
      })
      expect(Duration.toSeconds(Duration.decode(defaults.pingInterval))).toBe(30)

      const yaml = "ws_config:\n  max_message_size: 2048\n  ping_interval: 5s\nlimits:\n  max_devices_per_user: 2\n"
      const fromYaml = yield* underSources(WsConfig.wsOptionsConfig, { "gateway.yaml": yaml }, {})
      expect(fromYaml.maxMessageSize).toBe(2048)
      expect(Duration.toSeconds(Duration.decode(fromYaml.pingInterval))).toBe(5)
      expect(fromYaml.maxDevicesPerUser).toBe(2)

      const fromEnv = yield* underSources(WsConfig.wsOptionsConfig, { "gateway.yaml": yaml }, {
        RESONANCE_WS_CONFIG_MAX_MESSAGE_SIZE: "4096"
      })
      expect(fromEnv.maxMessageSize).toBe(4096)
      expect(Duration.toSeconds(Duration.decode(fromEnv.pingInterval))).toBe(5)
    }))

  it.effect("a bad CIDR in security.ip_allow from the environment fails the WebSocket and HTTP layers, naming the key", () =>
    Effect.gen(function*() {
      const environment = { RESONANCE_SECURITY_IP_ALLOW: "10.0.0.0/8,10.0.0.0/33" }
      const expected = "security.ip_allow: not an address or CIDR range: 10.0.0.0/33"
      for (const build of [buildFailure(WsConfig.layerConfig), buildFailure(HttpConfig.layerConfig)]) {
        const error = yield* underSources(build, {}, environment)
        expect(error).toMatchObject({ _tag: "IpRuleError", key: "security.ip_allow", entries: ["10.0.0.0/33"] })
        expect(error.message).toBe(expected)
      }
      const options = yield* underSources(Effect.flip(HttpConfig.httpOptionsConfig), {}, environment)
      expect(options.message).toBe(expected)
    }))

  it.effect("the HTTP slice reads security.cors_origins and its limits", () =>
    Effect.gen(function*() {
      // The failed-login policy and the group cap are the use cases' (Accounts, Sessions), read by the composition root.
      const { limits, options, shared } = yield* underSources(Effect.all({
        options: HttpConfig.httpOptionsConfig,
        limits: HttpConfig.httpLimitSettings,
        shared: sharedLimitSettings
      }), {
        "gateway.yaml": "security:\n  cors_origins: [\"https://a.example\"]\nlimits:\n  failed_login_window: 1m\n"
      }, { RESONANCE_LIMITS_MAX_GROUP_MEMBERS: "7" })
      expect(options.corsOrigins).toEqual(["https://a.example"])
      expect(options.rateLimits).toMatchObject({ authPerIpPerMinute: 30, loginsInFlightPerIp: 2 })
      expect(Duration.toSeconds(limits.failedLoginWindow)).toBe(60)
      expect(shared.maxGroupMembers).toBe(7)
    }))
})
