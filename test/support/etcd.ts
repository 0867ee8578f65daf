import { type ChildProcess, spawn } from "node:child_process"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Https from "node:https"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll } from "vitest"

/** A real `etcd` process on free local ports, for integration tests. */
export interface EtcdProcess {
  /** `http://127.0.0.1:<client port>` */
  readonly endpoint: string
  readonly dataDir: string
  /** Stops the process (SIGTERM, then SIGKILL) and removes the data dir. Idempotent. */
  stop(): Promise<void>
  /** SIGKILL now, keeping the data dir: a crash that `restart()` can recover from. */
  kill(): void
  /** (Re)starts on the same ports; `wipe` empties the data dir first (a fresh cluster). */
  restart(options?: { readonly wipe?: boolean }): Promise<void>
  /** Whether the process is currently running. */
  running(): boolean
}

export interface StartEtcdOptions {
  /** `false` reserves ports and a data dir without starting (etcd "down at start"); call `restart()` later. */
  readonly start?: boolean
  readonly readyTimeoutMs?: number
  /** Serve clients over TLS with this certificate; with `clientCa`, demand client certificates signed by it. */
  readonly tls?: {
    readonly cert: string
    readonly key: string
    readonly ca: string
    readonly clientCertAuth: boolean
    /** Used by the harness's own health checks when client certificates are demanded. */
    readonly client?: { readonly cert: string; readonly key: string }
  }
}

const live = new Set<ChildProcess>()
const handles = new Set<EtcdProcess>()

const killAllNow = () => {
  for (const child of live) child.kill("SIGKILL")
  live.clear()
}

process.once("exit", killAllNow)
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killAllNow()
    process.kill(process.pid, signal)
  })
}

afterAll(async () => {
  await Promise.all([...handles].map((handle) => handle.stop()))
})

const freePorts = async (count: number): Promise<Array<number>> => {
  const servers = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise<Net.Server>((resolve, reject) => {
        const server = Net.createServer()
        server.once("error", reject)
        server.listen(0, "127.0.0.1", () => resolve(server))
      }))
  )
  const ports = servers.map((server) => (server.address() as Net.AddressInfo).port)
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  return ports
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const waitForExit = (child: ChildProcess, timeoutMs: number): Promise<boolean> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(true)
    : new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs)
      child.once("exit", () => {
        clearTimeout(timer)
        resolve(true)
      })
    })

export const startEtcd = async (options: StartEtcdOptions = {}): Promise<EtcdProcess> => {
  const [clientPort, peerPort] = await freePorts(2)
  const dataDir = mkdtempSync(Path.join(Os.tmpdir(), "resonance-etcd-"))
  const tls = options.tls
  const endpoint = `${tls ? "https" : "http"}://127.0.0.1:${clientPort}`
  const peerUrl = `http://127.0.0.1:${peerPort}`
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000
  let child: ChildProcess | undefined
  let output = ""
  let stopped = false

  const args = [
    "--name", "default",
    "--data-dir", Path.join(dataDir, "member-data"),
    "--listen-client-urls", endpoint,
    "--advertise-client-urls", endpoint,
    "--listen-peer-urls", peerUrl,
    "--initial-advertise-peer-urls", peerUrl,
    "--initial-cluster", `default=${peerUrl}`,
    // A single member needs no slack for elections; this makes (re)starts take milliseconds.
    "--heartbeat-interval", "50",
    "--election-timeout", "250",
    "--logger", "zap",
    "--log-level", "warn",
    ...(tls
      ? ["--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca, ...(tls.clientCertAuth ? ["--client-cert-auth"] : [])]
      : [])
  ]

  const isHealthy = async () => {
    if (tls) {
      return new Promise<boolean>((resolve) => {
        const request = Https.get(`${endpoint}/health`, {
          ca: readFileSync(tls.ca),
          ...(tls.client ? { cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key) } : {}),
          timeout: 1_000
        }, (response) => {
          let body = ""
          response.on("data", (chunk) => (body += chunk))
          response.on("end", () => resolve(response.statusCode === 200 && body.includes("true")))
        })
        request.on("error", () => resolve(false))
        request.on("timeout", () => request.destroy())
      })
    }
    try {
      const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) })
      const body = (await response.json()) as { health?: string }
      return response.ok && body.health === "true"
    } catch {
      return false
    }
  }

  const launch = async () => {
    output = ""
    const proc = spawn("etcd", args, { stdio: ["ignore", "pipe", "pipe"] })
    child = proc
    live.add(proc)
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-8_000)
    }
    proc.stdout?.on("data", collect)
    proc.stderr?.on("data", collect)
    proc.once("exit", () => live.delete(proc))
    let spawnError: Error | undefined
    proc.once("error", (error) => {
      spawnError = error
    })
    const deadline = Date.now() + readyTimeoutMs
    while (Date.now() < deadline) {
      if (spawnError) throw spawnError
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`etcd exited early (${proc.exitCode ?? proc.signalCode}):\n${output}`)
      }
      if (await isHealthy()) return
      await sleep(50)
    }
    proc.kill("SIGKILL")
    throw new Error(`etcd not healthy within ${readyTimeoutMs} ms:\n${output}`)
  }

  const halt = async () => {
    const proc = child
    child = undefined
    if (!proc) return
    proc.kill("SIGTERM")
    if (!(await waitForExit(proc, 5_000))) {
      proc.kill("SIGKILL")
      await waitForExit(proc, 5_000)
    }
  }

  const handle: EtcdProcess = {
    endpoint,
    dataDir,
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
    kill: () => {
      child?.kill("SIGKILL")
    },
    restart: async (restartOptions) => {
      if (stopped) throw new Error("etcd harness already stopped")
      await halt()
      if (restartOptions?.wipe) rmSync(Path.join(dataDir, "member-data"), { recursive: true, force: true })
      await launch()
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      handles.delete(handle)
      await halt()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
  handles.add(handle)
  if (options.start !== false) {
    try {
      await launch()
    } catch (error) {
      await handle.stop()
      throw error
    }
  }
  return handle
}

/** Turns on etcd's own authentication with a `root` user (etcdctl over plain HTTP). */
export const enableEtcdAuth = (endpoint: string, password: string) => {
  const etcdctl = (...args: Array<string>) =>
    execFileSync("etcdctl", ["--endpoints", endpoint, ...args], { env: { ...process.env, ETCDCTL_API: "3" }, stdio: "pipe" })
  etcdctl("user", "add", "root", "--new-user-password", password)
  etcdctl("auth", "enable")
}
