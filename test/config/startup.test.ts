import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Logging from "../../src/adapters/obs/Logging.js"
import { collect, providerFromSettings } from "../../src/adapters/platform/config/GatewayConfig.js"
import * as Gateway from "../../src/Gateway.js"

/**
 * The gateway refuses unsafe or broken configuration before it serves, saying why in one JSON line:
 * the production graph built in-process under a provider holding the bad value, its failure
 * reported as `main.ts` reports it.
 */
const refusal = (environment: Record<string, string>) =>
  Effect.gen(function*() {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-startup-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
    const lines: Array<string> = []
    // The sources main.ts reads: an empty configuration directory, then the environment.
    const { settings: collected } = yield* collect({
      directory: dir,
      environment: {
        RESONANCE_SERVICE_HTTP_PORT: "0",
        RESONANCE_SERVICE_GRPC_PORT: "0",
        RESONANCE_OBSERVABILITY_METRICS_PORT: "0",
        RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dir, "resonance.db"),
        ...environment
      }
    })
    const provider = providerFromSettings(collected)
    const failure = yield* Effect.flip(Layer.build(Gateway.layerConfig).pipe(
      Logging.reportStartupFailure,
      Effect.provide(Logging.layer({ format: "json", level: "info", write: (line) => void lines.push(line) })),
      Effect.withConfigProvider(provider)
    ))
    const errors = lines.map((line) => JSON.parse(line) as { logLevel: string; annotations: Record<string, string> })
      .filter((entry) => entry.logLevel === "ERROR")
    return { failure, errors }
  })

describe("startup refuses unsafe or broken configuration, saying why in one JSON line", () => {
  it.scoped("an auth.secret_key shorter than 32 bytes", () =>
    Effect.gen(function*() {
      const { errors } = yield* refusal({ RESONANCE_AUTH_SECRET_KEY: "0123456789abcdef0123456789abcde" })
      expect(errors).toHaveLength(1)
      expect(errors[0]!.annotations.error).toContain("auth.secret_key")
      expect(errors[0]!.annotations.error).toContain("at least 32 bytes")
    }))

  it.scoped("an address list entry that is not an address or CIDR, naming the key", () =>
    Effect.gen(function*() {
      const { errors } = yield* refusal({ RESONANCE_SECURITY_IP_DENY: "10.0.0.0/8,10.0.0.300" })
      expect(errors).toHaveLength(1)
      expect(errors[0]!.annotations.error).toBe("security.ip_deny: not an address or CIDR range: 10.0.0.300")
    }))

  it.scoped("a connection budget at or above the descriptor limit", () =>
    Effect.gen(function*() {
      const { errors } = yield* refusal({ RESONANCE_OVERLOAD_MAX_OPEN_FILES: "4096", RESONANCE_OVERLOAD_CONNECTION_BUDGET: "5000" })
      expect(errors).toHaveLength(1)
      expect(errors[0]!.annotations.error).toContain("overload.connection_budget")
    }))
})
