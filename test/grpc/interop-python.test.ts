import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Readline from "node:readline"
import type { PushMessage } from "../../src/gen/gateway/v1/packet.js"
import { auth } from "../support/client.js"
import type { TestClient } from "../support/gateway.js"
import { connectClient } from "../support/gateway.js"
import type { GatewayProcess } from "../support/process.js"
import { startGateway, tempDir } from "../support/process.js"

/**
 * PushService.Push, served on node:http2 by our own unary server, called by an independent gRPC
 * stack: Python's grpcio, i.e. gRPC C-core (Debian's python3-grpcio, installed by
 * test/setup/ensure-deps.sh). One client process makes every call on one channel, through a TCP
 * forwarder that counts what the client sends per call and can hold a request back; real
 * WebSockets show what each call delivered.
 */

/** Debian's interpreter, where python3-grpcio lives (a `python3` earlier on PATH may lack it). */
const PYTHON = "/usr/bin/python3"
const CLIENT = Path.join(import.meta.dirname, "interop_push_client.py")
const PUSH = "/resonance.gateway.v1.PushService/Push"
const NON_ASCII_METHOD = "/resonance.gateway.v1.PushService/Pü推"
const MAX_MESSAGE = 4 * 1024 * 1024
/** What the forwarder lets through of a held-back request: its headers and the start of its body. */
const HELD_AFTER_BYTES = 32 * 1024

interface PlannedCall {
  readonly name: string
  readonly method: string
  readonly token: string | null
  readonly to_usernames: ReadonlyArray<string>
  readonly message: Record<string, string | number>
  readonly compression?: "gzip"
  readonly timeout?: number
  /** The forwarder holds the request after HELD_AFTER_BYTES until the client has given up on it. */
  readonly holdBack?: boolean
}

interface CallResult {
  readonly name: string
  readonly code: string
  readonly details: string | null
  readonly response: { msg_id: string; error: string; failed_usernames: Array<string> } | null
}

const internalToken = Crypto.randomBytes(32).toString("hex")
const dataDir = tempDir("resonance-interop-")
const suffix = Crypto.randomBytes(3).toString("hex")
const alice = `alice-${suffix}`
const bob = `bob-${suffix}` // registered, never connected
const carol = `carol-${suffix}` // connected, only the marker is addressed to her

// Above 2^53, so that an int64 squeezed through a double would show.
let nextMsgId = 9_007_199_254_740_993n
const message = (content: string, extra: Record<string, number> = {}) => ({
  msg_id: String(nextMsgId++),
  seq_id: 7,
  session_id: "0",
  from_username: "task",
  content,
  type: "text",
  timestamp: 1_700_000_000,
  ...extra
})

/** Compressible, so that C-core really sends it gzip'd (it sends a message plain when gzip would not shrink it). */
const gzipContent = "gzip'd by C-core ".repeat(16_384)

const plan: ReadonlyArray<PlannedCall> = [
  { name: "with-token", method: PUSH, token: internalToken, to_usernames: [alice, bob], message: message("hello from C-core") },
  { name: "no-token", method: PUSH, token: null, to_usernames: [alice], message: message("without a token") },
  { name: "wrong-token", method: PUSH, token: "0".repeat(64), to_usernames: [alice], message: message("with a wrong token") },
  { name: "gzip", method: PUSH, token: internalToken, to_usernames: [alice], message: message(gzipContent), compression: "gzip" },
  {
    name: "gzip-inflates-oversize",
    method: PUSH,
    token: internalToken,
    to_usernames: [alice],
    message: message("z", { content_bytes: MAX_MESSAGE + 1024 }),
    compression: "gzip"
  },
  { name: "oversize", method: PUSH, token: internalToken, to_usernames: [alice], message: message("big", { content_bytes: 5 * 1024 * 1024 }) },
  { name: "after-oversize", method: PUSH, token: internalToken, to_usernames: [alice], message: message("after the oversize call") },
  { name: "unknown-method", method: "/resonance.gateway.v1.PushService/Nope", token: internalToken, to_usernames: [alice], message: message("nope") },
  // Held back mid-body, so the deadline cannot be met (C-core's timer is too coarse for a tiny
  // deadline to beat a fast answer); 3 MiB is more than HTTP/2 flow control lets C-core send
  // unanswered, so the gateway never gets the whole request.
  {
    name: "deadline",
    method: PUSH,
    token: internalToken,
    to_usernames: [alice],
    message: message("past its deadline", { content_bytes: 3 * 1024 * 1024 }),
    timeout: 0.2,
    holdBack: true
  },
  { name: "after-deadline", method: PUSH, token: internalToken, to_usernames: [alice], message: message("after the deadline call") },
  { name: "non-ascii-method", method: NON_ASCII_METHOD, token: internalToken, to_usernames: [alice], message: message("pü") },
  { name: "marker", method: PUSH, token: internalToken, to_usernames: [alice, carol], message: message("marker") }
]

const planned = (name: string) => plan.find((call) => call.name === name)!

interface Forwarder {
  readonly port: number
  /** Bytes received from the client so far. */
  readonly received: () => number
  /** From now on, forward `bytes` more to the gateway and hold the rest. */
  readonly holdAfter: (bytes: number) => void
  /** Forward what was held, and everything from now on. */
  readonly release: () => void
  readonly close: () => void
}

/** A TCP forwarder from the client to the gateway on 127.0.0.1:`port`. */
const startForwarder = (port: number): Promise<Forwarder> =>
  new Promise((resolve, reject) => {
    let received = 0
    let budget: number | undefined
    const held: Array<{ upstream: Net.Socket; chunk: Buffer }> = []
    const sockets = new Set<Net.Socket>()
    const server = Net.createServer((client) => {
      const upstream = Net.connect(port, "127.0.0.1")
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.once("close", () => (sockets.delete(socket), client.destroy(), upstream.destroy()))
      }
      upstream.pipe(client)
      client.on("data", (chunk: Buffer) => {
        received += chunk.byteLength
        if (budget === undefined) return void upstream.write(chunk)
        const through = Math.min(budget, chunk.byteLength)
        budget -= through
        if (through > 0) upstream.write(chunk.subarray(0, through))
        if (through < chunk.byteLength) held.push({ upstream, chunk: chunk.subarray(through) })
      })
    })
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as Net.AddressInfo).port,
        received: () => received,
        holdAfter: (bytes) => (budget = bytes),
        release: () => {
          budget = undefined
          for (const { upstream, chunk } of held.splice(0)) upstream.write(chunk)
        },
        close: () => {
          server.close()
          for (const socket of sockets) socket.destroy()
        }
      })
    )
  })

/**
 * Runs the Python client on `plan` through `forwarder`, in lock-step (it waits for a go before each
 * call), so that what the client sent between two calls' go is that call's alone. Rejects with its
 * output when it does not exit 0.
 */
const runPythonClient = (forwarder: Forwarder) =>
  new Promise<{ results: Array<CallResult>; wireBytes: Map<string, number> }>((resolve, reject) => {
    const child = spawn(PYTHON, [CLIENT], { stdio: ["pipe", "pipe", "pipe"] })
    const results: Array<CallResult> = []
    const wireBytes = new Map<string, number>()
    let current: { name: string; from: number } | undefined
    const closeCurrent = () => current !== undefined && wireBytes.set(current.name, forwarder.received() - current.from)
    let stdout = ""
    let stderr = ""
    child.stderr.on("data", (chunk) => (stderr += chunk))
    Readline.createInterface({ input: child.stdout }).on("line", (line) => {
      stdout += `${line}\n`
      const parsed = JSON.parse(line) as { ready: string } | CallResult
      if ("ready" in parsed) {
        closeCurrent()
        current = { name: parsed.ready, from: forwarder.received() }
        if (planned(parsed.ready).holdBack) forwarder.holdAfter(HELD_AFTER_BYTES)
        child.stdin.write("go\n")
        return
      }
      results.push(parsed)
      if (planned(parsed.name).holdBack) forwarder.release()
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.once("error", (error) => (clearTimeout(timer), reject(new Error(`cannot run ${PYTHON}: ${error.message}`))))
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      closeCurrent()
      if (code === 0) return resolve({ results, wireBytes })
      reject(new Error(`the Python gRPC client failed (${code ?? signal}); python3-grpcio installed?\n${stderr}\n${stdout}`))
    })
    child.stdin.write(`${JSON.stringify({ target: `127.0.0.1:${forwarder.port}`, calls: plan })}\n`)
  })

let gateway: GatewayProcess
let forwarder: Forwarder
let results: Array<CallResult>
let wireBytes: Map<string, number>
let aliceSocket: TestClient
let carolSocket: TestClient
/** What each socket received before the marker push: every packet, and the pushes among them. */
let alicePacketsBeforeMarker: TestClient["packets"]
let aliceBeforeMarker: Array<PushMessage>
let carolBeforeMarker: TestClient["packets"]

const result = (name: string) => {
  const found = results.find((r) => r.name === name)
  if (found === undefined) throw new Error(`no result for ${name}`)
  return found
}

const msgIdOf = (name: string) => BigInt(planned(name).message.msg_id!)

const pushesTo = (packets: TestClient["packets"]) =>
  packets.flatMap((packet) => (packet.payload?.$case === "push" ? [packet.payload.value] : []))

describe("PushService.Push against Python grpcio (gRPC C-core)", () => {
  beforeAll(async () => {
    gateway = await startGateway({
      RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dataDir, "resonance.db"),
      RESONANCE_PUSH_ENABLED: "true",
      RESONANCE_INTERNAL_TOKEN: internalToken
    })
    const tokens: Record<string, string> = {}
    for (const username of [alice, bob, carol]) {
      const registered = await auth(gateway.url, "Register", { username, password: "secret-pw" })
      expect(registered.status, JSON.stringify(registered.body)).toBe(200)
      tokens[username] = registered.body.accessToken
    }
    aliceSocket = await connectClient(gateway.httpPort, { token: tokens[alice]! })
    carolSocket = await connectClient(gateway.httpPort, { token: tokens[carol]! })
    forwarder = await startForwarder(gateway.grpcPort)

    ;({ results, wireBytes } = await runPythonClient(forwarder))

    // Pushes to one socket are written in call order, so what came before the marker is all that
    // the earlier calls delivered.
    const marker = planned("marker").message.content
    const isMarker = (p: TestClient["packets"][number]) => p.payload?.$case === "push" && p.payload.value.content === marker
    await Promise.all([aliceSocket.next(isMarker), carolSocket.next(isMarker)])
    alicePacketsBeforeMarker = aliceSocket.packets.slice(0, aliceSocket.packets.findIndex(isMarker))
    aliceBeforeMarker = pushesTo(alicePacketsBeforeMarker)
    carolBeforeMarker = carolSocket.packets.slice(0, carolSocket.packets.findIndex(isMarker))
  }, 60_000)

  afterAll(async () => {
    aliceSocket?.ws.close()
    carolSocket?.ws.close()
    forwarder?.close()
    await gateway?.stop("SIGKILL")
    Fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it("answers every planned call, in order", () => {
    expect(results.map((r) => r.name)).toEqual(plan.map((call) => call.name))
  })

  it("with the token: OK, msg_id echoed, the unconnected user failed, the connected one got exactly that push", () => {
    expect(result("with-token")).toEqual({
      name: "with-token",
      code: "OK",
      details: null,
      response: { msg_id: planned("with-token").message.msg_id, error: "", failed_usernames: [bob] }
    })
    expect(aliceBeforeMarker[0]).toEqual({
      msgId: msgIdOf("with-token"),
      seqId: 7n,
      sessionId: "0",
      fromUsername: "task",
      toUsername: "",
      content: "hello from C-core",
      type: "text",
      timestamp: 1_700_000_000n,
      sessionMeta: undefined
    })
  })

  it("without the token or with a wrong one: UNAUTHENTICATED", () => {
    expect(result("no-token")).toMatchObject({ code: "UNAUTHENTICATED", response: null })
    expect(result("wrong-token")).toMatchObject({ code: "UNAUTHENTICATED", response: null })
  })

  it("a gzip-compressed request: OK and delivered intact", () => {
    // The premise: the request crossed the wire compressed (C-core may send a message plain).
    expect(wireBytes.get("gzip")).toBeLessThan(gzipContent.length / 10)
    expect(result("gzip")).toMatchObject({ code: "OK", response: { msg_id: planned("gzip").message.msg_id, failed_usernames: [] } })
    const delivered = aliceBeforeMarker.find((p) => p.msgId === msgIdOf("gzip"))
    expect(delivered?.content.length).toBe(gzipContent.length)
    expect(delivered?.content === gzipContent).toBe(true)
  })

  it("a gzip request under 4 MiB that inflates past it: RESOURCE_EXHAUSTED", () => {
    expect(wireBytes.get("gzip-inflates-oversize")).toBeLessThan(MAX_MESSAGE / 10)
    expect(result("gzip-inflates-oversize")).toEqual({
      name: "gzip-inflates-oversize",
      code: "RESOURCE_EXHAUSTED",
      details: `request larger than ${MAX_MESSAGE} bytes`,
      response: null
    })
  })

  it("a 5 MiB request: RESOURCE_EXHAUSTED, and the next call on the same channel works", () => {
    expect(result("oversize")).toEqual({
      name: "oversize",
      code: "RESOURCE_EXHAUSTED",
      details: `request larger than ${MAX_MESSAGE} bytes`,
      response: null
    })
    expect(result("after-oversize")).toMatchObject({ code: "OK", response: { msg_id: planned("after-oversize").message.msg_id } })
  })

  it("an unknown method: UNIMPLEMENTED, naming it", () => {
    expect(result("unknown-method")).toEqual({
      name: "unknown-method",
      code: "UNIMPLEMENTED",
      details: "unknown method /resonance.gateway.v1.PushService/Nope",
      response: null
    })
  })

  it("a deadline that expires mid-request: DEADLINE_EXCEEDED at the client, and the gateway serves the next call", () => {
    // The premise: the gateway had part of the request, never all of it.
    expect(wireBytes.get("deadline")).toBeGreaterThan(HELD_AFTER_BYTES)
    expect(wireBytes.get("deadline")).toBeLessThan(3 * 1024 * 1024)
    expect(result("deadline")).toMatchObject({ code: "DEADLINE_EXCEEDED", response: null })
    expect(result("after-deadline")).toMatchObject({ code: "OK", response: { msg_id: planned("after-deadline").message.msg_id } })
  })

  it("a non-ASCII method name comes back intact in the UNIMPLEMENTED details", () => {
    expect(result("non-ascii-method")).toEqual({
      name: "non-ascii-method",
      code: "UNIMPLEMENTED",
      details: `unknown method ${NON_ASCII_METHOD}`,
      response: null
    })
  })

  it("the sockets received exactly the pushes of the OK calls, once each, in call order", () => {
    expect(alicePacketsBeforeMarker.length).toBe(aliceBeforeMarker.length)
    expect(aliceBeforeMarker.map((p) => p.msgId)).toEqual(["with-token", "gzip", "after-oversize", "after-deadline"].map(msgIdOf))
    expect(carolBeforeMarker).toEqual([])
  })
})
