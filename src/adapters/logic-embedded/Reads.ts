import type Database from "better-sqlite3"
import { Effect } from "effect"
import type { LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { logicError, NOT_A_MEMBER } from "../../domain/Errors.js"
import type { ContactInfo, InboxEvent, PushMessage, SessionInfo } from "../../domain/Model.js"
import { SessionType } from "../../domain/Model.js"
import type { MessageRow } from "./Messages.js"
import { sessionNameFor, toPush } from "./Messages.js"
import type { SessionCache } from "./SessionCache.js"
import { firstIdAt } from "./Snowflake.js"
import type { Prepare } from "./Statements.js"
import { attempt } from "./Storage.js"
import { containsPattern, prefixPattern } from "./Validation.js"

export interface ReadsOptions {
  readonly db: Database.Database
  readonly prepare: Prepare
  readonly cache: SessionCache
  /** Bytes of messages in one history or inbox page, beyond its row limit. */
  readonly maxPageBytes: number
  readonly sessionPageSize: number
}

export type Reads =
  & Pick<LogicShape, "getSessionList" | "getHistoryMessages" | "getContactList" | "searchUser" | "pullInboxDelta">
  & {
    /**
     * The user's inbox from `sinceMs` (unix milliseconds) on, oldest first, at most `limit`
     * messages: what a socket opened then may not have been pushed.
     */
    readonly inboxSince: (username: string, sinceMs: number, limit: number) => Effect.Effect<ReadonlyArray<PushMessage>, LogicError>
  }

interface MemberSessionRow {
  readonly session_id: string
  readonly type: bigint
  readonly name: string
  readonly avatar_url: string
  readonly max_seq: bigint
  readonly last_active_at: bigint
  readonly last_read_seq: bigint
}

interface UserRow {
  readonly username: string
  readonly nickname: string
  readonly avatar_url: string
}

const MAX_INT64 = 9_223_372_036_854_775_807n
const HISTORY_DEFAULT = 20
const HISTORY_MAX = 100
const INBOX_DEFAULT = 100
const INBOX_MAX = 500
const SEARCH_LIMIT = 20
/** Inbox ids below this were handed out by the table of schema version 2; msg_ids are far above. */
const LEGACY_INBOX_IDS = 1n << 40n
const MESSAGE_COLUMNS = "m.session_id, m.seq_id, m.msg_id, m.from_username, m.to_username, m.content, m.type, m.timestamp"

/**
 * An inbox cursor before every message committed at `ms` or later: a msg_id carries its commit
 * millisecond and is never behind the clock (Snowflake.ts).
 */
const cursorBefore = (ms: number): bigint => {
  const first = firstIdAt(ms)
  return first === 0n ? 0n : first - 1n
}

export const clampLimit = (requested: bigint, fallback: number, max: number): number =>
  requested <= 0n ? fallback : requested > BigInt(max) ? max : Number(requested)

/** Where a page of the session list ends: its last session's activity time and id. */
interface SessionCursor {
  readonly activeAt: bigint
  readonly sessionId: string
}

const firstPage: SessionCursor = { activeAt: MAX_INT64, sessionId: "" }

const encodeSessionCursor = (cursor: SessionCursor): string =>
  Buffer.from(`${cursor.activeAt}\n${cursor.sessionId}`).toString("base64url")

const decodeSessionCursor = (token: string): SessionCursor | undefined => {
  const text = Buffer.from(token, "base64url").toString()
  const newline = text.indexOf("\n")
  const activeAt = text.slice(0, newline)
  if (newline <= 0 || !/^\d{1,19}$/.test(activeAt)) return undefined
  return { activeAt: BigInt(activeAt), sessionId: text.slice(newline + 1) }
}

/** How many of `rows`, from the first, fit in `maxBytes` of content; always at least one. */
const rowsWithin = (rows: ReadonlyArray<{ readonly content: string }>, maxBytes: number): number => {
  let bytes = 0
  for (let i = 0; i < rows.length; i++) {
    // Ids, names and framing of a message come to well under this.
    bytes += Buffer.byteLength(rows[i]!.content) + 256
    if (bytes > maxBytes && i > 0) return i
  }
  return rows.length
}

const toContact = (row: UserRow): ContactInfo => ({ username: row.username, nickname: row.nickname, avatarUrl: row.avatar_url })

/** The read side: each read is one transaction, so every page is a consistent snapshot. */
export const makeReads = (options: ReadsOptions): Effect.Effect<Reads, LogicError> =>
  Effect.gen(function*() {
    const { db, prepare, cache, maxPageBytes, sessionPageSize } = options
    const statements = yield* attempt("preparing reads", () => ({
      sessionsOf: prepare<[{ username: string; activeAt: bigint; sessionId: string; limit: number }], MemberSessionRow>(
        `SELECT s.session_id, s.type, s.name, s.avatar_url, s.max_seq, s.last_active_at, sm.last_read_seq
         FROM session_members sm JOIN sessions s ON s.session_id = sm.session_id
         WHERE sm.username = @username
           AND (s.last_active_at < @activeAt OR (s.last_active_at = @activeAt AND s.session_id > @sessionId))
         ORDER BY s.last_active_at DESC, s.session_id LIMIT @limit`
      ),
      messageAt: prepare<[string, bigint], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.session_id = ? AND m.seq_id = ?`
      ),
      historyPage: prepare<[string, bigint, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.session_id = ? AND m.seq_id < ? ORDER BY m.seq_id DESC LIMIT ?`
      ),
      memberships: prepare<[string], { readonly session_id: string; readonly joined_seq: bigint }>(
        "SELECT session_id, joined_seq FROM session_members WHERE username = ?"
      ),
      inboxOf: prepare<[string, bigint, bigint, number], MessageRow>(
        `SELECT ${MESSAGE_COLUMNS} FROM messages m
         WHERE m.session_id = ? AND m.msg_id > ? AND m.seq_id > ? ORDER BY m.msg_id LIMIT ?`
      ),
      legacyCursor: prepare<[string, bigint], bigint>(
        `SELECT m.msg_id FROM inbox i JOIN messages m ON m.session_id = i.session_id AND m.seq_id = i.seq_id
         WHERE i.username = ? AND i.inbox_id <= ? ORDER BY i.inbox_id DESC LIMIT 1`,
        { pluck: true }
      ),
      contactsOf: prepare<[string], UserRow>(
        `SELECT DISTINCT u.username, u.nickname, u.avatar_url
         FROM session_members me
         JOIN sessions s ON s.session_id = me.session_id AND s.type = ${SessionType.Direct}
         JOIN session_members other ON other.session_id = me.session_id AND other.username <> me.username
         JOIN users u ON u.username = other.username
         WHERE me.username = ? ORDER BY u.username`
      ),
      searchUsers: prepare<[{ exact: string; prefix: string; contains: string; limit: number }], UserRow>(
        `SELECT username, nickname, avatar_url FROM users
         WHERE username LIKE @contains ESCAPE '\\' OR nickname LIKE @contains ESCAPE '\\'
         ORDER BY CASE WHEN username = @exact COLLATE NOCASE THEN 0
                       WHEN username LIKE @prefix ESCAPE '\\' THEN 1 ELSE 2 END, username
         LIMIT @limit`
      )
    }))

    const sessionListTx = db.transaction((username: string, after: SessionCursor, limit: number) => {
      const rows = statements.sessionsOf.all({ username, activeAt: after.activeAt, sessionId: after.sessionId, limit: limit + 1 })
      const last = rows.length > limit ? rows[limit - 1] : undefined
      const sessions = rows.slice(0, limit).map((row): SessionInfo => {
        const type = Number(row.type)
        let name = row.name
        let avatarUrl = row.avatar_url
        if (type === SessionType.Direct) {
          const session = cache.get(row.session_id)
          const other = session === undefined ? undefined : cache.otherMember(session, username)
          if (other !== undefined) {
            name = other.nickname
            avatarUrl = other.avatarUrl
          }
        }
        const lastMessage = row.max_seq > 0n ? statements.messageAt.get(row.session_id, row.max_seq) : undefined
        const unread = row.max_seq - row.last_read_seq
        return {
          sessionId: row.session_id,
          name,
          type,
          avatarUrl,
          unreadCount: unread > 0n ? unread : 0n,
          lastReadSeq: row.last_read_seq,
          lastMessage: lastMessage === undefined ? undefined : toPush(lastMessage, { name, type })
        }
      })
      return {
        sessions,
        nextPageToken: last === undefined ? "" : encodeSessionCursor({ activeAt: last.last_active_at, sessionId: last.session_id })
      }
    })

    const historyTx = db.transaction((username: string, sessionId: string, before: bigint, limit: number) => {
      const session = cache.get(sessionId)
      if (session === undefined) return { _tag: "NotFound" } as const
      if (!cache.membersOf(session).has(username)) return { _tag: "NotMember" } as const
      const meta = { name: sessionNameFor(cache, session, username), type: session.type }
      const rows = statements.historyPage.all(sessionId, before, limit)
      // Newest first from the query: keep the newest that fit the byte budget, return them ascending.
      const kept = rows.length === 0 ? 0 : rowsWithin(rows, maxPageBytes)
      const messages: Array<PushMessage> = []
      for (let i = kept - 1; i >= 0; i--) messages.push(toPush(rows[i]!, meta))
      return { _tag: "Page", messages } as const
    })

    /**
     * The messages after `cursor` of every session the user is in, from the position they joined
     * at, in commit (msg_id) order. Only sessions with a message after the cursor are read.
     */
    const inboxTx = db.transaction((username: string, requested: bigint, limit: number) => {
      const cursor = requested > 0n && requested < LEGACY_INBOX_IDS
        ? statements.legacyCursor.get(username, requested) ?? 0n
        : requested
      const found: Array<MessageRow> = []
      for (const membership of statements.memberships.all(username)) {
        const session = cache.get(membership.session_id)
        if (session === undefined || session.lastMsgId <= cursor) continue
        for (const row of statements.inboxOf.all(membership.session_id, cursor, membership.joined_seq, limit + 1)) found.push(row)
      }
      found.sort((a, b) => (a.msg_id < b.msg_id ? -1 : a.msg_id > b.msg_id ? 1 : 0))
      const kept = Math.min(limit, found.length === 0 ? 0 : rowsWithin(found, maxPageBytes))
      const events: Array<InboxEvent> = []
      for (let i = 0; i < kept; i++) {
        const row = found[i]!
        const session = cache.get(row.session_id)!
        events.push({ inboxId: row.msg_id, message: toPush(row, { name: sessionNameFor(cache, session, username), type: session.type }) })
      }
      return { events, nextCursorId: kept > 0 ? found[kept - 1]!.msg_id : cursor, hasMore: found.length > kept }
    })

    const getSessionList: Reads["getSessionList"] = Effect.fn("LogicEmbedded.getSessionList")(function*(username, page) {
      const after = page === undefined || page.pageToken === "" ? firstPage : decodeSessionCursor(page.pageToken)
      if (after === undefined) return yield* Effect.fail(logicError("invalid_argument", "page_token is not one this gateway gave out"))
      const limit = clampLimit(page?.limit ?? 0n, sessionPageSize, sessionPageSize)
      return yield* attempt("getSessionList", () => sessionListTx(username, after, limit))
    })

    const getHistoryMessages: Reads["getHistoryMessages"] = Effect.fn("LogicEmbedded.getHistoryMessages")(function*(input) {
      const limit = clampLimit(input.limit, HISTORY_DEFAULT, HISTORY_MAX)
      const before = input.beforeSeq > 0n ? input.beforeSeq : MAX_INT64
      const outcome = yield* attempt("getHistoryMessages", () => historyTx(input.username, input.sessionId, before, limit))
      if (outcome._tag === "NotFound") return yield* Effect.fail(logicError("not_found", "session not found"))
      if (outcome._tag === "NotMember") return yield* Effect.fail(logicError("permission_denied", NOT_A_MEMBER))
      return outcome.messages
    })

    const getContactList: Reads["getContactList"] = Effect.fn("LogicEmbedded.getContactList")(function*(username) {
      return yield* attempt("getContactList", () => statements.contactsOf.all(username).map(toContact))
    })

    const searchUser: Reads["searchUser"] = Effect.fn("LogicEmbedded.searchUser")(function*(query) {
      const trimmed = query.trim()
      if (trimmed === "") return []
      return yield* attempt("searchUser", () =>
        statements.searchUsers
          .all({ exact: trimmed, prefix: prefixPattern(trimmed), contains: containsPattern(trimmed), limit: SEARCH_LIMIT })
          .map(toContact))
    })

    const pullInboxDelta: Reads["pullInboxDelta"] = Effect.fn("LogicEmbedded.pullInboxDelta")(function*(input) {
      const limit = clampLimit(input.limit, INBOX_DEFAULT, INBOX_MAX)
      const cursor = input.cursorId > 0n ? input.cursorId : 0n
      return yield* attempt("pullInboxDelta", () => inboxTx(input.username, cursor, limit))
    })

    const inboxSince: Reads["inboxSince"] = Effect.fn("LogicEmbedded.inboxSince")(function*(username, sinceMs, limit) {
      const messages: Array<PushMessage> = []
      let cursor = cursorBefore(sinceMs)
      while (messages.length < limit) {
        const page = yield* attempt("inboxSince", () => inboxTx(username, cursor, Math.min(INBOX_MAX, limit - messages.length)))
        for (const event of page.events) if (event.message !== undefined) messages.push(event.message)
        if (!page.hasMore || page.events.length === 0) break
        cursor = page.nextCursorId
      }
      return messages
    })

    return { getSessionList, getHistoryMessages, getContactList, searchUser, pullInboxDelta, inboxSince }
  })
