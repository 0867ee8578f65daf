import type Database from "better-sqlite3"
import { Clock, Effect } from "effect"
import type { LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import type { Revocation, User } from "../../domain/Model.js"
import type { Passwords } from "./Passwords.js"
import type { Prepare } from "./Statements.js"
import { ROOM_SESSION_ID } from "./Schema.js"
import { attempt, fromChecked } from "./Storage.js"
import type { Jwt } from "../platform/auth/Jwt.js"
import { checkNickname, checkPassword, checkUsername } from "./Validation.js"

interface UserRow {
  readonly username: string
  readonly nickname: string
  readonly avatar_url: string
}
interface UserAuthRow extends UserRow {
  readonly password_hash: string
}
interface RevocationRow {
  readonly cursor: bigint
  readonly token_id: string
  readonly username: string
  readonly expires_at: bigint
}

export type Accounts = Pick<LogicShape, "register" | "login" | "validateToken" | "revokeToken" | "listRevocations">

export interface AccountsOptions {
  readonly db: Database.Database
  readonly prepare: Prepare
  /** A new user joined the room at this position. */
  readonly joinedRoom: (user: { readonly username: string; readonly nickname: string }, joinedSeq: bigint) => void
  readonly tokens: Jwt
  readonly passwords: Passwords
  /** Makes what was just committed durable before it is acknowledged. */
  readonly durable: Effect.Effect<void, LogicError>
}

const BAD_CREDENTIALS = "invalid username or password"
const REVOCATION_PAGE_MAX = 1_000

const toUser = (row: UserRow): User => ({ username: row.username, nickname: row.nickname, avatarUrl: row.avatar_url })
const toRevocation = (row: RevocationRow): Revocation => ({
  cursor: row.cursor,
  tokenId: row.token_id,
  username: row.username,
  expiresAt: row.expires_at
})

/** Users, passwords and tokens: registration, login, validation and Logout (revocations stored). */
export const makeAccounts = (options: AccountsOptions): Effect.Effect<Accounts, LogicError> =>
  Effect.gen(function*() {
    const { db, prepare, tokens, passwords, durable } = options
    const statements = yield* attempt("preparing accounts", () => ({
      userByName: prepare<[string], UserRow>("SELECT username, nickname, avatar_url FROM users WHERE username = ?"),
      userAuth: prepare<[string], UserAuthRow>(
        "SELECT username, nickname, avatar_url, password_hash FROM users WHERE username = ?"
      ),
      insertUser: prepare<[string, string, string, number]>(
        "INSERT OR IGNORE INTO users (username, password_hash, nickname, created_at) VALUES (?, ?, ?, ?)"
      ),
      // A new member starts with everything already in the room read, and their inbox after it.
      joinRoom: prepare<[string, number, string], bigint>(
        `INSERT OR IGNORE INTO session_members (session_id, username, last_read_seq, joined_seq, joined_at)
         SELECT session_id, ?, max_seq, max_seq, ? FROM sessions WHERE session_id = ? RETURNING joined_seq`,
        { pluck: true }
      ),
      revoke: prepare<[string, string, number], RevocationRow>(
        `INSERT INTO revoked_tokens (token_id, username, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (token_id) DO UPDATE SET token_id = excluded.token_id
         RETURNING cursor, token_id, username, expires_at`
      ),
      pruneRevocations: prepare<[number]>("DELETE FROM revoked_tokens WHERE expires_at <= ?"),
      revocationsAfter: prepare<[bigint, number, number], RevocationRow>(
        `SELECT cursor, token_id, username, expires_at FROM revoked_tokens
         WHERE cursor > ? AND expires_at > ? ORDER BY cursor LIMIT ?`
      )
    }))

    // Every revocation still in force, in memory: validation is a map lookup, not a query.
    const revoked = new Map<string, number>()
    const startedAt = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    for (const row of yield* attempt("loading revocations", () => statements.revocationsAfter.all(0n, startedAt, 1e9))) {
      revoked.set(row.token_id, Number(row.expires_at))
    }

    const registerTx = db.transaction((username: string, hash: string, nickname: string, nowMs: number) => {
      if (statements.insertUser.run(username, hash, nickname, nowMs).changes === 0) return false
      const joinedSeq = statements.joinRoom.get(username, nowMs, ROOM_SESSION_ID)
      if (joinedSeq !== undefined) options.joinedRoom({ username, nickname }, joinedSeq)
      return true
    })

    const issue = (user: UserRow) =>
      Effect.gen(function*() {
        const nowMs = yield* Clock.currentTimeMillis
        const accessToken = yield* attempt("token signing", () => tokens.sign(user.username, nowMs))
        return { accessToken, user: toUser(user) }
      })

    /** A token this Logic signed, unexpired and not revoked. */
    const verified = (token: string) =>
      Effect.gen(function*() {
        const nowMs = yield* Clock.currentTimeMillis
        const check = tokens.check(token, nowMs)
        if (check._tag === "Expired") return yield* Effect.fail(logicError("unauthenticated", "access token expired"))
        if (check._tag === "Invalid") return yield* Effect.fail(logicError("unauthenticated", "invalid access token"))
        if (revoked.has(check.tokenId)) return yield* Effect.fail(logicError("unauthenticated", "access token was revoked"))
        return check
      })

    const register: Accounts["register"] = Effect.fn("LogicEmbedded.register")(function*(input) {
      const username = yield* fromChecked(checkUsername(input.username))
      yield* fromChecked(checkPassword(input.password))
      const nickname = yield* fromChecked(checkNickname(input.nickname, username))
      const taken = logicError("already_exists", `username "${username}" is already taken`)
      if ((yield* attempt("register", () => statements.userByName.get(username))) !== undefined) return yield* taken
      const hash = yield* passwords.hash(input.password)
      const nowMs = yield* Clock.currentTimeMillis
      const created = yield* attempt("register", () => registerTx.immediate(username, hash, nickname, nowMs))
      yield* durable
      if (!created) return yield* taken
      return yield* issue({ username, nickname, avatar_url: "" })
    })

    const login: Accounts["login"] = Effect.fn("LogicEmbedded.login")(function*(input) {
      const username = input.username.trim()
      const row = yield* attempt("login", () => statements.userAuth.get(username))
      const matches = yield* passwords.verify(input.password, row?.password_hash)
      if (row === undefined || !matches) return yield* Effect.fail(logicError("unauthenticated", BAD_CREDENTIALS))
      return yield* issue(row)
    })

    const validateToken: Accounts["validateToken"] = Effect.fn("LogicEmbedded.validateToken", { captureStackTrace: false })(
      function*(token) {
        const check = yield* verified(token)
        const row = yield* attempt("validateToken", () => statements.userByName.get(check.username))
        if (row === undefined) return yield* Effect.fail(logicError("unauthenticated", "user no longer exists"))
        return toUser(row)
      }
    )

    const revokeToken: Accounts["revokeToken"] = Effect.fn("LogicEmbedded.revokeToken")(function*(token) {
      const check = yield* verified(token)
      const nowSeconds = Math.floor((yield* Clock.currentTimeMillis) / 1000)
      const row = yield* attempt("revokeToken", () =>
        db.transaction(() => {
          statements.pruneRevocations.run(nowSeconds)
          return statements.revoke.get(check.tokenId, check.username, check.expiresAt)!
        }).immediate())
      yield* durable
      revoked.set(check.tokenId, check.expiresAt)
      for (const [tokenId, expiresAt] of revoked) if (expiresAt <= nowSeconds) revoked.delete(tokenId)
      return toRevocation(row)
    })

    const listRevocations: Accounts["listRevocations"] = (afterCursor, limit) =>
      Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
        attempt("listRevocations", () => {
          const rows = statements.revocationsAfter.all(
            afterCursor > 0n ? afterCursor : 0n,
            Math.floor(nowMs / 1000),
            Math.min(Math.max(1, limit), REVOCATION_PAGE_MAX)
          )
          return {
            revocations: rows.map(toRevocation),
            nextCursor: rows.length > 0 ? rows[rows.length - 1]!.cursor : afterCursor
          }
        }))

    return { register, login, validateToken, revokeToken, listRevocations }
  })
