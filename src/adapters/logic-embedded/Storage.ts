import { Cause, Effect } from "effect"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import type { Checked } from "./Validation.js"

export const fromChecked = <A>(checked: Checked<A>): Effect.Effect<A, LogicError> =>
  checked.ok ? Effect.succeed(checked.value) : Effect.fail(checked.error)

/** What a caller hears of a storage exception: `internal`, never the SQL. */
export const storageError = (operation: string): LogicError => logicError("internal", `${operation} failed: storage error`)

/** Logs a storage exception for the operator, with its cause. */
export const logStorageFailure = (operation: string, error: unknown): Effect.Effect<void> =>
  Effect.logError(`embedded logic: ${operation} failed`, Cause.die(error))

/** Logs a storage exception and answers `internal`: never a defect, never the SQL in the message. */
export const storageFailure = (operation: string, error: unknown): Effect.Effect<never, LogicError> =>
  Effect.zipRight(logStorageFailure(operation, error), Effect.fail(storageError(operation)))

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
