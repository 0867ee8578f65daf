import bcrypt from "bcrypt"
import { Cause, Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as Os from "node:os"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import { makeTurns } from "../../domain/Turns.js"

export interface PasswordOptions {
  /** bcrypt cost (log2 rounds). */
  readonly cost: number
  /** Hashes computed at once; 0 means one fewer than the cores (at least one). */
  readonly concurrency: number
  /** Hashes that may wait for a turn; beyond that a login or registration is refused at once. */
  readonly queue: number
}

export interface Passwords {
  readonly hash: (password: string) => Effect.Effect<string, LogicError>
  /** Compares against `hash`, or against a decoy when there is none, so both refusals take as long. */
  readonly verify: (password: string, hash: string | undefined) => Effect.Effect<boolean, LogicError>
}

/** libuv's pool runs the hashes; keep a thread of it free for the WAL flushes acks wait for. */
const defaultConcurrency = () => {
  const pool = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  return Math.max(1, Math.min(Os.availableParallelism() - 1, pool - 1))
}

const busy = logicError("resource_exhausted", "too many logins at once; retry in a moment")

/**
 * bcrypt through the native binding: every hash runs on libuv's thread pool, never on the event
 * loop, behind a semaphore of `concurrency` permits and a bounded queue, so a login flood costs
 * refusals instead of stalling sockets.
 */
export const makePasswords = (options: PasswordOptions): Effect.Effect<Passwords> =>
  Effect.gen(function*() {
    const concurrency = options.concurrency > 0 ? options.concurrency : defaultConcurrency()
    const inTurn = yield* makeTurns(concurrency, options.queue)

    const limited = <A>(operation: string, run: () => Promise<A>): Effect.Effect<A, LogicError> =>
      inTurn(
        Effect.tryPromise({ try: run, catch: (error) => error }).pipe(
          Effect.catchAll((error) =>
            Effect.logError(`embedded logic: ${operation} failed`, Cause.die(error)).pipe(
              Effect.zipRight(Effect.fail(logicError("internal", `${operation} failed`)))
            )
          )
        ),
        busy
      )

    const decoy = yield* Effect.cached(limited("password hashing", () => bcrypt.hash(randomBytes(16).toString("hex"), options.cost)))

    return {
      hash: (password) => limited("password hashing", () => bcrypt.hash(password, options.cost)),
      verify: (password, hash) =>
        Effect.flatMap(hash === undefined ? decoy : Effect.succeed(hash), (against) =>
          limited("password check", () => bcrypt.compare(password, against)))
    }
  })
