import { describe, expect, it } from "vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { freePort, startProcess, tempDir } from "../support/process.js"

/** Starts a gateway that should refuse to start; its exit code and its one JSON error line. */
const refusedStart = async (env: Record<string, string>) => {
  const dir = tempDir("resonance-startup-")
  const running = startProcess("src/main.ts", {
    RESONANCE_SERVICE_HOST: "127.0.0.1",
    RESONANCE_SERVICE_HTTP_PORT: String(await freePort()),
    RESONANCE_OBSERVABILITY_METRICS_PORT: String(await freePort()),
    RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dir, "resonance.db"),
    ...env
  })
  const code = await running.exited
  Fs.rmSync(dir, { recursive: true, force: true })
  const lines = running.output().trim().split("\n").filter((line) => line.startsWith("{"))
  return { code, errors: lines.map((line) => JSON.parse(line)).filter((entry) => entry.logLevel === "ERROR") }
}

describe("startup refuses unsafe or broken configuration, saying why in one JSON line", () => {
  it("an auth.secret_key shorter than 32 bytes", async () => {
    const { code, errors } = await refusedStart({ RESONANCE_AUTH_SECRET_KEY: "0123456789abcdef0123456789abcde" })
    expect(code).toBe(1)
    expect(errors).toHaveLength(1)
    expect(errors[0].annotations.error).toContain("auth.secret_key")
    expect(errors[0].annotations.error).toContain("at least 32 bytes")
  }, 30_000)

  it("an address list entry that is not an address or CIDR, naming the key", async () => {
    const { code, errors } = await refusedStart({ RESONANCE_SECURITY_IP_DENY: "10.0.0.0/8,10.0.0.300" })
    expect(code).toBe(1)
    expect(errors[0].annotations.error).toBe("security.ip_deny: not an address or CIDR range: 10.0.0.300")
  }, 30_000)
})
