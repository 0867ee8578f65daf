import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Url from "node:url"

const root = Path.resolve(import.meta.dirname, "../..")
/** tsx's loader by path: `--import tsx` would resolve it from the child's working directory. */
const tsxLoader = Url.pathToFileURL(Path.join(root, "node_modules/tsx/dist/loader.mjs")).href

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

export const tempDir = (prefix: string) => Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))

export interface RunningProcess {
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  readonly exited: Promise<number | string>
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | string>
}

const live = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL")
})

/** The production entry points and the bundles `npm run build` makes of them (the test setup builds them first). */
const bundles: Record<string, string> = { "src/main.ts": "dist/main.mjs", "src/logic-main.ts": "dist/logic.mjs" }

/**
 * Starts `entry` as one real Node process: a production entry as its built bundle, as `npm start`
 * runs it, anything else (a test fixture) through tsx; `detached` puts it in a process group of
 * its own, which `process.kill(-pid, signal)` signals as a whole.
 */
export const startProcess = (entry: string, env: Record<string, string>, cwd = root, detached = false): RunningProcess => {
  const bundle = bundles[entry]
  const args = bundle !== undefined ? [Path.join(root, bundle)] : ["--import", tsxLoader, Path.join(root, entry)]
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached
  })
  live.add(child)
  let output = ""
  child.stdout!.on("data", (chunk) => (output += chunk))
  child.stderr!.on("data", (chunk) => (output += chunk))
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      live.delete(child)
      resolve(code ?? signal ?? "unknown")
    })
  )
  return {
    child,
    output: () => output,
    exited,
    stop: (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    }
  }
}

export const waitFor = async (check: () => Promise<boolean>, timeoutMs: number, what: string) => {
  const started = Date.now()
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

export interface GatewayProcess extends RunningProcess {
  readonly httpPort: number
  readonly grpcPort: number
  readonly metricsPort: number
  readonly url: string
}

/** A gateway process on free ports, ready (its /readyz answers 200) when this resolves. */
export const startGateway = async (
  env: Record<string, string> = {},
  entry = "src/main.ts",
  options: {
    /** Working directory (where `./configs` is looked for); default the repository. */
    readonly cwd?: string
    /** `false`: none of the test defaults below (host, log level, drain), only what `env` and the files say. */
    readonly testDefaults?: boolean
    /** A process group of its own (see `startProcess`). */
    readonly detached?: boolean
  } = {}
): Promise<GatewayProcess> => {
  const httpPort = Number(env.RESONANCE_SERVICE_HTTP_PORT ?? (await freePort()))
  const grpcPort = Number(env.RESONANCE_SERVICE_GRPC_PORT ?? (await freePort()))
  const metricsPort = Number(env.RESONANCE_OBSERVABILITY_METRICS_PORT ?? (await freePort()))
  const defaults: Record<string, string> = options.testDefaults === false
    ? {}
    : { RESONANCE_SERVICE_HOST: "127.0.0.1", RESONANCE_LOG_LEVEL: "warn", RESONANCE_SHUTDOWN_DRAIN_SECONDS: "0.2" }
  const running = startProcess(entry, {
    ...defaults,
    ...env,
    RESONANCE_SERVICE_HTTP_PORT: String(httpPort),
    RESONANCE_SERVICE_GRPC_PORT: String(grpcPort),
    RESONANCE_OBSERVABILITY_METRICS_PORT: String(metricsPort)
  }, options.cwd, options.detached)
  const url = `http://127.0.0.1:${httpPort}`
  try {
    await Promise.race([
      waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 30_000, `gateway ready on ${url}`),
      running.exited.then((code) => {
        throw new Error(`gateway exited early (${code}):\n${running.output()}`)
      })
    ])
  } catch (error) {
    await running.stop("SIGKILL")
    throw error
  }
  return { ...running, httpPort, grpcPort, metricsPort, url }
}
