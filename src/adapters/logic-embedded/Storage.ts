import { Cause, Effect } from "effect"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import type { Checked } from "./Validation.js"

export const fromChecked = <A>(checked: Checked<A>): Effect.Effect<A, LogicError> =>
  checked.ok ? Effect.succeed(checked.value) : Effect.fail(checked.error)

/** Logs a storage exception and answers `internal`: never a defect, never the SQL in the message. */
export const storageFailure = (operation: string, error: unknown): Effect.Effect<never, LogicError> =>
  Effect.logError(`embedded logic: ${operation} failed`, Cause.die(error)).pipe(
    Effect.zipRight(Effect.fail(logicError("internal", `${operation} failed: storage error`)))
  )

/** Runs synchronous SQLite work; any exception becomes an `internal` LogicError. */
export const attempt = <A>(operation: string, f: () => A): Effect.Effect<A, LogicError> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(f())
    } catch (error) {
      return storageFailure(operation, error)
    }
  })

export const attemptPromise = <A>(operation: string, f: () => Promise<A>): Effect.Effect<A, LogicError> =>
  Effect.tryPromise({ try: f, catch: (error) => error }).pipe(Effect.catchAll((error) => storageFailure(operation, error)))
