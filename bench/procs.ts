import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"

export const repoRoot = Path.resolve(import.meta.dirname, "..")
const tsxLoader = pathToFileURL(Path.join(repoRoot, "node_modules/tsx/dist/loader.mjs")).href

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** The hard limit on open files: children are started with their soft limit raised to it. */
export const hardFileLimit = (): number => {
  const out = execFileSync("bash", ["-c", "ulimit -Hn"], { encoding: "utf8" }).trim()
  return out === "unlimited" ? 1_048_576 : Number(out)
}

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** The last lines the child wrote, for error reports. */
  readonly output: () => string
  readonly exited: Promise<number | string>
  readonly stop: (signal?: NodeJS.Signals, graceMs?: number) => Promise<number | string>
  /** Signals the child's process group (a `detached` child leads its own), as a supervisor does. */
  readonly signalGroup: (signal: NodeJS.Signals) => void
}

const live = new Set<ChildProcess>()

const kill = (child: ChildProcess, signal: NodeJS.Signals, group: boolean) => {
  try {
    if (group) process.kill(-child.pid!, signal)
    else child.kill(signal)
  } catch {
    // already gone
  }
}

/** Last resort: whatever happens to the orchestrator, no child (nor a group it leads) outlives it. */
export const killAll = () => {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) kill(child, "SIGKILL", detachedChildren.has(child))
  }
  live.clear()
}
const detachedChildren = new WeakSet<ChildProcess>()
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    killAll()
    process.exit(130)
  })
}

export interface SpawnOptions {
  readonly name: string
  readonly env?: Record<string, string>
  readonly ipc?: boolean
  readonly cwd?: string
  /** Also append everything the child writes to this file. */
  readonly logFile?: string
  /** Leader of a process group of its own (see `Child.signalGroup`). */
  readonly detached?: boolean
}

/** Any command as a child whose output is kept; the environment minus our own `RESONANCE_*` settings. */
export const spawnChild = (command: string, args: ReadonlyArray<string>, options: SpawnOptions): Child => {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("RESONANCE_")))
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    env: { ...inherited, ...options.env },
    stdio: options.ipc ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"],
    detached: options.detached ?? false
  })
  live.add(child)
  if (options.detached === true) detachedChildren.add(child)
  let output = ""
  const log = options.logFile === undefined ? undefined : Fs.createWriteStream(options.logFile, { flags: "a" })
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000)
    log?.write(chunk)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      live.delete(child)
      log?.end()
      resolve(code ?? signal ?? "unknown")
    })
  )
  const stop = async (signal: NodeJS.Signals = "SIGTERM", graceMs = 5_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return exited
    child.kill(signal)
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    const result = await exited
    clearTimeout(timer)
    return result
  }
  return {
    name: options.name,
    process: child,
    pid: child.pid!,
    output: () => output,
    exited,
    stop,
    signalGroup: (signal) => kill(child, signal, true)
  }
}

export interface StartOptions extends Omit<SpawnOptions, "cwd"> {
  /**
   * A TypeScript entry, relative to the repository root: a production entry (`src/main.ts`,
   * `src/logic-main.ts`) runs as its built bundle, as `npm start` runs it; anything else with tsx.
   */
  readonly entry: string
  readonly nodeFlags?: ReadonlyArray<string>
  /** Where `entry` is looked up and the process runs; default the repository root. */
  readonly root?: string
}

/** The production entry points and their bundles (`npm run build`). */
const bundles: Record<string, string> = { "src/main.ts": "dist/main.mjs", "src/logic-main.ts": "dist/logic.mjs" }

/** The bundle of a production entry in `root`, built first when its sources are newer; undefined for other entries. */
const bundleOf = (root: string, entry: string): string | undefined => {
  const bundle = bundles[entry]
  const builder = Path.join(root, "scripts/build.mjs")
  // A checkout from before the build step runs its TypeScript through tsx.
  if (bundle === undefined || !Fs.existsSync(builder)) return undefined
  execFileSync(process.execPath, ["-e", `import(${JSON.stringify(pathToFileURL(builder).href)}).then((b) => b.buildIfStale())`], {
    stdio: "inherit"
  })
  return Path.join(root, bundle)
}

/** The Node flags of `npm start` (words after `node` that begin with `--`), so the gateway runs as deployed. */
export const npmStartFlags = (root = repoRoot): ReadonlyArray<string> => {
  const start: string = JSON.parse(Fs.readFileSync(Path.join(root, "package.json"), "utf8")).scripts.start
  const words = start.split(/\s+/)
  return words.slice(words.indexOf("node") + 1).filter((word) => word.startsWith("--") && word !== "--import")
}

/**
 * Starts `node [flags] <bundle>` (or `node [flags] --import tsx <entry>`) as ONE process (the tsx
 * CLI would put the program in a grandchild, out of reach of our SIGUSR2 and /proc/<pid>), with
 * the soft file limit raised.
 */
export const startNode = (options: StartOptions): Child => {
  const root = options.root ?? repoRoot
  const bundle = bundleOf(root, options.entry)
  const args = [...(options.nodeFlags ?? []), ...(bundle !== undefined ? [bundle] : ["--import", tsxLoader, Path.join(root, options.entry)])]
  return spawnChild("bash", ["-c", 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', process.execPath, ...args], {
    ...options,
    cwd: root
  })
}

/**
 * Request/answer over a child's IPC channel: `{ id, command }` out, `{ id, ok, result | error }`
 * back. A command not answered within its timeout, or pending when the child exits, is rejected.
 */
export const ipcCaller = <Command extends { readonly cmd: string }, Results extends Record<Command["cmd"], unknown>>(
  child: Child,
  name: string,
  defaultTimeoutMs: number
) => {
  let nextId = 1
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>()
  child.process.on("message", (reply: { id: number; ok: boolean; result?: unknown; error?: string }) => {
    const waiter = pending.get(reply.id)
    if (waiter === undefined) return
    pending.delete(reply.id)
    if (reply.ok) waiter.resolve(reply.result)
    else waiter.reject(new Error(`${name}: ${reply.error}`))
  })
  void child.exited.then((code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`${name} exited (${code}):\n${child.output()}`))
    pending.clear()
  })
  return <C extends Command>(command: C, timeoutMs = defaultTimeoutMs) =>
    new Promise<Results[C["cmd"]]>((resolve, reject) => {
      const id = nextId++
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`${name} did not answer ${command.cmd} within ${timeoutMs} ms`))
      }, timeoutMs)
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer)
          resolve(value as Results[C["cmd"]])
        },
        reject: (error) => {
          clearTimeout(timer)
          reject(error)
        }
      })
      child.process.send({ id, command })
    })
}

/** Resident set size in bytes, from /proc/<pid>/status. */
export const rssBytes = (pid: number): number => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(match[1]) * 1024
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export const cpuSeconds = (pid: number): number => {
  const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/**
 * The size of V8's young generation (new space) the child last reported after a `gc()` on SIGUSR2
 * (`bench-gc new_space=<bytes>` on stderr: bench/gc-on-signal.mjs, bench/baseline.ts); 0 if none.
 */
export const youngGenerationBytes = (child: Child): number => {
  const reports = [...child.output().matchAll(/bench-gc new_space=(\d+)/g)]
  return reports.length === 0 ? 0 : Number(reports[reports.length - 1]![1])
}

/** Full GCs (the child runs `gc()` on SIGUSR2), then RSS once it has settled. */
export const rssAfterGc = async (pid: number): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    process.kill(pid, "SIGUSR2")
    await sleep(400)
  }
  return rssBytes(pid)
}

export const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs: number, child?: Child) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child !== undefined && (child.process.exitCode !== null || child.process.signalCode !== null)) {
      throw new Error(`${child.name} exited while waiting for ${what}:\n${child.output()}`)
    }
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

/** Kernel TCP counters that show a listen queue overflowing (loopback shares one namespace). */
export const listenQueueCounters = (): { readonly overflows: number; readonly syncookies: number } => {
  const lines = Fs.readFileSync("/proc/net/netstat", "utf8").split("\n")
  const at = lines.findIndex((line) => line.startsWith("TcpExt:"))
  const names = lines[at]!.split(" ")
  const values = lines[at + 1]!.split(" ")
  const value = (name: string) => Number(values[names.indexOf(name)] ?? Number.NaN)
  return { overflows: value("ListenOverflows"), syncookies: value("SyncookiesSent") }
}
