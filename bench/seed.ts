import { Effect } from "effect"
import * as Os from "node:os"
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"
import { makeEmbeddedLogic } from "../src/adapters/logic-embedded/LogicEmbedded.js"

// Loader hooks are per thread: a worker registers tsx itself before importing this file.
const tsxApi = pathToFileURL(Path.resolve(import.meta.dirname, "../node_modules/tsx/dist/esm/api/index.mjs")).href
const workerBoot = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}) })`

export interface SeedOptions {
  readonly databasePath: string
  readonly secretKey: string
  readonly users: number
  /** Users 0..2·pairs−1 are paired (0,1), (2,3)… into direct sessions. */
  readonly directPairs: number
}

export interface DirectPair {
  readonly sessionId: string
  readonly a: number
  readonly b: number
}

export interface Seeded {
  readonly usernames: ReadonlyArray<string>
  readonly tokens: ReadonlyArray<string>
  readonly pairs: ReadonlyArray<DirectPair>
}

export const usernameOf = (index: number) => `bench${String(index).padStart(6, "0")}`

interface Slice {
  readonly databasePath: string
  readonly secretKey: string
  readonly from: number
  readonly to: number
}

const withLogic = <A>(databasePath: string, secretKey: string, use: (logic: Effect.Effect.Success<ReturnType<typeof makeEmbeddedLogic>>) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(
        // Cost 4 and no fsync per commit: seeding is setup, not what is measured.
        makeEmbeddedLogic({ databasePath, secretKey, bcryptRounds: 4, synchronous: "normal" }, () => Effect.void),
        use
      )
    )
  )

/** Registers users [from, to) and returns their tokens in order. */
const registerSlice = (slice: Slice): Promise<Array<string>> =>
  withLogic(slice.databasePath, slice.secretKey, (logic) =>
    Effect.forEach(
      Array.from({ length: slice.to - slice.from }, (_, i) => usernameOf(slice.from + i)),
      (username) => Effect.map(logic.register({ username, password: "bench-password", nickname: "" }), (r) => r.accessToken),
      { concurrency: 8 }
    ))

/**
 * Registers users and creates direct sessions with the embedded Logic itself, in-process, before
 * the gateway starts on the same file: going through HTTP with bcrypt cost 10 would take minutes.
 * bcrypt is CPU-bound JavaScript, so the registrations are split over worker threads.
 */
export const seed = async (options: SeedOptions): Promise<Seeded> => {
  // Creates the schema once, before several writers open the file.
  await withLogic(options.databasePath, options.secretKey, () => Effect.void)
  const workers = Math.max(1, Math.min(Os.availableParallelism(), 4))
  const per = Math.ceil(options.users / workers)
  const slices = Array.from({ length: workers }, (_, w): Slice => ({
    databasePath: options.databasePath,
    secretKey: options.secretKey,
    from: Math.min(options.users, w * per),
    to: Math.min(options.users, (w + 1) * per)
  }))
  const tokens = (
    await Promise.all(
      slices.map((slice) =>
        new Promise<Array<string>>((resolve, reject) => {
          const worker = new Worker(workerBoot, { eval: true, workerData: slice })
          worker.once("message", resolve)
          worker.once("error", reject)
          worker.once("exit", (code) => code !== 0 && reject(new Error(`seed worker exited with ${code}`)))
        })
      )
    )
  ).flat()
  const usernames = Array.from({ length: options.users }, (_, i) => usernameOf(i))
  const pairs = await withLogic(options.databasePath, options.secretKey, (logic) =>
    Effect.forEach(
      Array.from({ length: options.directPairs }, (_, i) => i),
      (i) =>
        Effect.map(
          logic.createSession({ creatorUsername: usernames[2 * i]!, members: [usernames[2 * i + 1]!], name: "", type: 1 }),
          (sessionId): DirectPair => ({ sessionId, a: 2 * i, b: 2 * i + 1 })
        )
    ))
  return { usernames, tokens, pairs }
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort
  registerSlice(workerData as Slice).then((tokens) => port.postMessage(tokens))
}
