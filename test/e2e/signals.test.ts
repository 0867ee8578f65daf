import { afterEach, describe, expect, it } from "vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { auth } from "../support/client.js"
import type { TestClient } from "../support/gateway.js"
import { connectClient } from "../support/gateway.js"
import type { GatewayProcess } from "../support/process.js"
import { startGateway, tempDir } from "../support/process.js"

const chat = (seq: string, content: string): WsPacket => ({
  seq,
  payload: { $case: "chat", value: { sessionId: "0", fromUsername: "", toUsername: "", content, type: "text", timestamp: 0n } }
})

let gateway: GatewayProcess | undefined
let dataDir: string | undefined

afterEach(async () => {
  await gateway?.stop("SIGKILL")
  if (dataDir !== undefined) Fs.rmSync(dataDir, { recursive: true, force: true })
})

/**
 * A supervisor (npm, a shell, systemd with KillMode=control-group) signals the whole process
 * group, often more than once: Ctrl-C after a SIGTERM, npm forwarding the signal it got itself.
 */
describe.each(["SIGTERM", "SIGINT"] as const)("%s to the process group, sent again during the drain", (signal) => {
  it("still drains: every chat is answered, every client closed uncleanly (to reconnect), exit 0", async () => {
    dataDir = tempDir("resonance-signals-")
    gateway = await startGateway(
      {
        RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dataDir, "resonance.db"),
        RESONANCE_SHUTDOWN_DRAIN_SECONDS: "1.5",
        RESONANCE_LIMITS_MESSAGES_PER_SECOND: "0"
      },
      "src/main.ts",
      { detached: true }
    )
    const clients: Array<TestClient> = []
    for (let i = 0; i < 8; i++) {
      const registered = await auth(gateway.url, "Register", { username: `sig${i}`, password: "secret-pw" })
      expect(registered.status).toBe(200)
      clients.push(await connectClient(gateway.httpPort, { token: registered.body.accessToken }))
    }
    const closed = clients.map((client) => client.closed)
    for (const client of clients) client.send(chat("before", "sent before the signal"))
    await Promise.all(clients.map((client) => client.next((p) => p.seq === "before")))

    process.kill(-gateway.child.pid!, signal)
    // The drain has begun once the first client is cut; the others follow over 1.5 s.
    await Promise.race(closed)
    // So the second signal lands mid-drain: it must not kill the process.
    process.kill(-gateway.child.pid!, signal)
    const stillOpen = clients.filter((client) => client.ws.readyState === client.ws.OPEN)
    expect(stillOpen.length).toBeGreaterThan(0)
    for (const client of stillOpen) client.send(chat("late", "sent during the drain"))
    const lateAcks = await Promise.all(
      stillOpen.map((client) =>
        client.next((p) => p.payload?.$case === "ack" && p.seq === "late", 3_000).then((p) => (p.payload as { value: any }).value)
      )
    )
    // Each is answered: served (its socket's turn in the drain has not come) or refused as too late.
    for (const ack of lateAcks) expect(ack.error === "" ? ack.msgId > 0n : ack.error.includes("shutting down")).toBe(true)

    expect(await gateway.exited).toBe(0)
    for (const end of await Promise.all(closed)) expect(end).toMatchObject({ code: 1006, wasClean: false })
    gateway = undefined
  }, 60_000)
})
