import { Effect } from "effect"
import * as Os from "node:os"
import { makeEmbeddedLogic } from "../src/adapters/logic-embedded/LogicEmbedded.js"

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

const withLogic = <A>(databasePath: string, secretKey: string, use: (logic: Effect.Effect.Success<ReturnType<typeof makeEmbeddedLogic>>) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(
        // Cost 4 and no fsync per commit: seeding is setup, not what is measured. The hashes run
        // on the thread pool, several at once.
        makeEmbeddedLogic(
          { databasePath, secretKey, bcryptRounds: 4, synchronous: "normal", hashConcurrency: Math.min(4, Os.availableParallelism()), hashQueue: 64 },
          () => {}
        ),
        use
      )
    )
  )

/**
 * Registers users and creates direct sessions with the embedded Logic itself, in-process, before
 * the gateway starts on the same file: going through HTTP with bcrypt cost 10 would take minutes.
 */
export const seed = async (options: SeedOptions): Promise<Seeded> => {
  const usernames = Array.from({ length: options.users }, (_, i) => usernameOf(i))
  return withLogic(options.databasePath, options.secretKey, (logic) =>
    Effect.gen(function*() {
      const tokens = yield* Effect.forEach(
        usernames,
        (username) => Effect.map(logic.register({ username, password: "bench-password", nickname: "" }), (r) => r.accessToken),
        { concurrency: 32 }
      )
      const pairs = yield* Effect.forEach(
        Array.from({ length: options.directPairs }, (_, i) => i),
        (i) =>
          Effect.map(
            logic.createSession({ creatorUsername: usernames[2 * i]!, members: [usernames[2 * i + 1]!], name: "", type: 1 }),
            (sessionId): DirectPair => ({ sessionId, a: 2 * i, b: 2 * i + 1 })
          )
      )
      return { usernames, tokens, pairs }
    }))
}
