import type Database from "better-sqlite3"

/** SQL executed by the embedded Logic, for `chat.sql_statements_per_message` and rows written. */
export interface StatementCounters {
  /** Prepared statements executed. */
  statements: number
  rowsWritten: number
  /** Write transactions (a BEGIN and a COMMIT each; a group commit's is shared by its batch). */
  transactions: number
}

export const makeCounters = (): StatementCounters => ({ statements: 0, rowsWritten: 0, transactions: 0 })

/** A prepared statement whose every execution is counted. */
export interface Counted<P extends ReadonlyArray<unknown>, R> {
  readonly run: (...params: P) => Database.RunResult
  readonly get: (...params: P) => R | undefined
  readonly all: (...params: P) => Array<R>
}

/**
 * Prepares once and counts each execution (and the rows a write changed). Plain closures over
 * the better-sqlite3 statement: a counter increment is all it adds to a call.
 */
export const preparer = (db: Database.Database, counters: StatementCounters) =>
<P extends ReadonlyArray<unknown>, R = never>(sql: string, options: { readonly pluck?: boolean } = {}): Counted<P, R> => {
  const statement = db.prepare<Array<unknown>, R>(sql)
  if (options.pluck === true) statement.pluck()
  return {
    run: (...params) => {
      counters.statements++
      const result = statement.run(...(params as unknown as Array<unknown>))
      counters.rowsWritten += result.changes
      return result
    },
    get: (...params) => {
      counters.statements++
      return statement.get(...(params as unknown as Array<unknown>))
    },
    all: (...params) => {
      counters.statements++
      return statement.all(...(params as unknown as Array<unknown>))
    }
  }
}

export type Prepare = ReturnType<typeof preparer>
