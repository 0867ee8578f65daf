import Database from "better-sqlite3"
import { Clock, Data, Effect, Layer, Schedule } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { PushDelivery } from "../../application/PushDelivery.js"
import type { ChatOrigin, HistoryInput, LogicShape, ReadPositionInput } from "../../application/ports/Logic.js"
import { Logic } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { logicError, NOT_A_MEMBER } from "../../domain/Errors.js"
import type {
  ChatRequest,
  ContactInfo,
  InboxEvent,
  InboxPage,
  PresenceBatch,
  PushMessage,
  SessionInfo,
  SessionMeta,
  SessionPage
} from "../../domain/Model.js"
import { messageTypeOf, SessionType } from "../../domain/Model.js"
import { validateChat } from "../../domain/Packet.js"
import { MIN_SECRET_BYTES } from "../../domain/Token.js"
import { makeAccounts } from "./Accounts.js"
import { makeCheckpointer } from "./Checkpointer.js"
import { makePasswords } from "./Passwords.js"
import { attempt, storageFailure } from "./Storage.js"
import { makeGroupCommit } from "./GroupCommit.js"
import { makeWalSync, noWalSync } from "./WalSync.js"
import { migrate } from "./Schema.js"
import { makeSnowflake, MAX_WORKER_ID } from "./Snowflake.js"
import { loadOrCreateSecret, makeTokenSigner } from "./Tokens.js"
import { containsPattern, prefixPattern } from "./Validation.js"
import { directSessionId, parseDirectSessionId, planSession } from "../../domain/Session.js"

export interface LogicEmbeddedOptions {
  /** SQLite file; its directory is created when missing. `:memory:` keeps nothing. */
  readonly databasePath: string
  /** HS256 key; when absent or empty a random one is generated once and kept in `<dir>/jwt-secret`. */
  readonly secretKey?: string
  /** Default 86400 (24 h); fractions are rounded down. */
  readonly tokenTtlSeconds?: number
  /** bcrypt cost, default 10; tests use 4. */
  readonly bcryptRounds?: number
  /** Largest chat content in UTF-8 bytes (default 64 KiB). */
  readonly maxContentBytes?: number
  /** Members of a group, its creator included (default 500). */
  readonly maxGroupMembers?: number
  /** Bytes of messages in one history or inbox page, beyond its row limit (default 1 MiB). */
  readonly maxPageBytes?: number
  /** Sessions in one page of the session list (default 100). */
  readonly sessionPageSize?: number
  /** Password hashes at once (0: cores - 1) and waiting for a turn (default 32). */
  readonly hashConcurrency?: number
  readonly hashQueue?: number
  /** Snowflake worker bits of msg_id, 0..1023. Default 0. */
  readonly workerId?: number
  /**
   * "full" (default): an acknowledged write survives power loss; the WAL is flushed with an
   * fdatasync off the event loop before the ack. "normal": it survives a process crash only.
   */
  readonly synchronous?: "full" | "normal"
}

/** The embedded Logic could not start: bad options, unusable directory, database or secret. */
export class EmbeddedLogicError extends Data.TaggedError("EmbeddedLogicError")<{
  readonly reason: "Options" | "Directory" | "Database" | "Secret"
  readonly message: string
  readonly cause?: unknown
}> {}

/** Where committed messages go: PushDelivery in-process, or a gRPC Push for a reference Logic service. */
export type Publisher = (
  recipients: ReadonlyArray<string>,
  message: PushMessage,
  origin?: ChatOrigin
) => Effect.Effect<void>

export interface EmbeddedLogic extends LogicShape {
  /** For each given user that is online somewhere, the gateways holding their connections. */
  readonly onlineGateways: (
    usernames: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyMap<string, ReadonlySet<string>>, LogicError>
  /** Forgets every user a gateway reported (it went away); returns how many entries were dropped. */
  readonly forgetGateway: (gatewayId: string) => Effect.Effect<number, LogicError>
}

interface UserRow {
  readonly username: string
  readonly nickname: string
  readonly avatar_url: string
}
interface SessionRow {
  readonly session_id: string
  readonly type: bigint
  readonly name: string
  readonly avatar_url: string
  readonly max_seq: bigint
}
interface MemberSessionRow extends SessionRow {
  readonly last_read_seq: bigint
  readonly last_active_at: bigint
}

/** Where a page of the session list ends: its last session's activity time and id. */
interface SessionCursor {
  readonly activeAt: bigint
  readonly sessionId: string
}

const firstPage: SessionCursor = { activeAt: 9_223_372_036_854_775_807n, sessionId: "" }

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
interface MessageRow {
  readonly session_id: string
  readonly seq_id: bigint
  readonly msg_id: bigint
  readonly from_username: string
  readonly to_username: string
  readonly content: string
  readonly type: string
  readonly timestamp: bigint
}
interface InboxRow extends MessageRow {
  readonly inbox_id: bigint
  readonly session_type: bigint
  readonly session_name: string
}
interface PresenceRow {
  readonly username: string
  readonly gateway_id: string
}

interface PostInput {
  readonly sessionId: string
  readonly fromUsername: string
  readonly content: string
  readonly type: string
  readonly timestamp: bigint
  readonly msgId: bigint
  readonly nowMs: number
}

/** A committed message and what publishing it needs. */
interface Posted {
  readonly _tag: "Posted"
  readonly row: MessageRow
  readonly sessionType: number
  readonly sessionName: string
  /** Direct sessions: each member with the session name as that member sees it. */
  readonly recipients: ReadonlyArray<{ readonly username: string; readonly metaName: string }> | undefined
  readonly members: ReadonlyArray<string>
}

type PostOutcome = Posted | { readonly _tag: "NotFound" } | { readonly _tag: "NotMember" }

type CreateOutcome =
  | { readonly _tag: "Created"; readonly sessionId: string; readonly posted: PostOutcome }
  | { readonly _tag: "Existing"; readonly sessionId: string }
  | { readonly _tag: "UnknownUser"; readonly username: string }

const MAX_INT64 = 9_223_372_036_854_775_807n
const HISTORY_DEFAULT = 20
const HISTORY_MAX = 100
const INBOX_DEFAULT = 100
const INBOX_MAX = 500
const SEARCH_LIMIT = 20

const NOT_MEMBER = NOT_A_MEMBER

const clampLimit = (requested: bigint, fallback: number, max: number): number =>
  requested <= 0n ? fallback : requested > BigInt(max) ? max : Number(requested)

const toPush = (row: MessageRow, sessionMeta: SessionMeta | undefined): PushMessage => ({
  msgId: row.msg_id,
  seqId: row.seq_id,
  sessionId: row.session_id,
  fromUsername: row.from_username,
  toUsername: row.to_username,
  content: row.content,
  type: row.type,
  timestamp: row.timestamp,
  sessionMeta
})

const toContact = (row: UserRow): ContactInfo => ({
  username: row.username,
  nickname: row.nickname,
  avatarUrl: row.avatar_url
})

const validateOptions = (options: LogicEmbeddedOptions): Effect.Effect<void, EmbeddedLogicError> => {
  const problem = (message: string) => Effect.fail(new EmbeddedLogicError({ reason: "Options", message }))
  const ttl = options.tokenTtlSeconds
  if (ttl !== undefined && !(Number.isFinite(ttl) && ttl >= 1)) {
    return problem("tokenTtlSeconds must be at least 1")
  }
  const rounds = options.bcryptRounds
  if (rounds !== undefined && (!Number.isInteger(rounds) || rounds < 4 || rounds > 31)) {
    return problem("bcryptRounds must be an integer in 4..31")
  }
  const worker = options.workerId
  if (worker !== undefined && (!Number.isInteger(worker) || worker < 0 || worker > MAX_WORKER_ID)) {
    return problem(`workerId must be an integer in 0..${MAX_WORKER_ID}`)
  }
  if (options.synchronous !== undefined && options.synchronous !== "full" && options.synchronous !== "normal") {
    return problem('synchronous must be "full" or "normal"')
  }
  if (options.databasePath.length === 0) return problem("databasePath must not be empty")
  if (options.secretKey !== undefined && options.secretKey !== "" && Buffer.byteLength(options.secretKey) < MIN_SECRET_BYTES) {
    return problem(`secretKey must be at least ${MIN_SECRET_BYTES} bytes`)
  }
  return Effect.void
}

const openDatabase = (databasePath: string): Effect.Effect<Database.Database, EmbeddedLogicError, Scope.Scope> =>
  Effect.gen(function*() {
    const inMemory = databasePath === ":memory:"
    if (!inMemory) {
      const directory = path.dirname(path.resolve(databasePath))
      yield* Effect.try({
        try: () => {
          fs.mkdirSync(directory, { recursive: true, mode: 0o700 })
          // Messages and password hashes are for this process only. SQLite gives the -wal and -shm
          // files the database file's mode, so creating it 0600 covers all three; older installs
          // are tightened too.
          fs.closeSync(fs.openSync(databasePath, "a", 0o600))
          for (const file of [databasePath, `${databasePath}-wal`, `${databasePath}-shm`]) {
            if (fs.existsSync(file)) fs.chmodSync(file, 0o600)
          }
        },
        catch: (cause) =>
          new EmbeddedLogicError({ reason: "Directory", message: `cannot prepare ${databasePath}: ${String(cause)}`, cause })
      })
    }
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new Database(databasePath),
        catch: (cause) =>
          new EmbeddedLogicError({ reason: "Database", message: `cannot open ${databasePath}: ${String(cause)}`, cause })
      }),
      (db) => Effect.sync(() => db.close())
    )
    const nowMs = yield* Clock.currentTimeMillis
    const outcome = yield* Effect.try({
      try: () => {
        if (!inMemory) db.pragma("journal_mode = WAL")
        // Commits never fsync on the event loop; durability comes from WalSync, checkpoints
        // from the Checkpointer's thread.
        db.pragma("synchronous = NORMAL")
        if (!inMemory) db.pragma("wal_autocheckpoint = 0")
        db.pragma("foreign_keys = ON")
        db.pragma("busy_timeout = 5000")
        db.defaultSafeIntegers(true)
        return migrate(db, nowMs)
      },
      catch: (cause) =>
        new EmbeddedLogicError({ reason: "Database", message: `cannot prepare ${databasePath}: ${String(cause)}`, cause })
    })
    if (outcome._tag === "TooNew") {
      return yield* new EmbeddedLogicError({
        reason: "Database",
        message: `${databasePath} has schema version ${outcome.found}, newer than this build supports`
      })
    }
    return db
  })

/**
 * The Logic service in-process on SQLite. Committed messages are handed to `publish`, which
 * lets the same code back the embedded gateway (PushDelivery) and a reference gRPC Logic service.
 */
export const makeEmbeddedLogic = (
  options: LogicEmbeddedOptions,
  publish: Publisher
): Effect.Effect<EmbeddedLogic, EmbeddedLogicError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validateOptions(options)
    const ttlSeconds = Math.floor(options.tokenTtlSeconds ?? 86_400)
    const chatRules = { maxContentBytes: options.maxContentBytes ?? 64 * 1024 }
    const sessionRules = { maxGroupMembers: options.maxGroupMembers ?? 500 }
    const maxPageBytes = options.maxPageBytes ?? 1024 * 1024
    const sessionPageSize = options.sessionPageSize ?? 100
    const db = yield* openDatabase(options.databasePath)
    const wal = options.databasePath === ":memory:" || options.synchronous === "normal"
      ? noWalSync
      : yield* makeWalSync(options.databasePath)
    if (options.databasePath !== ":memory:") {
      const checkpointer = yield* makeCheckpointer(options.databasePath)
      yield* Effect.sync(() => checkpointer.request()).pipe(Effect.repeat(Schedule.spaced("1 second")), Effect.forkScoped)
    }
    const durable = wal.sync.pipe(Effect.catchAll((error) => storageFailure("flushing the WAL", error)))
    const secret = options.secretKey || (yield* Effect.try({
      try: () => loadOrCreateSecret(options.databasePath),
      catch: (cause) =>
        new EmbeddedLogicError({ reason: "Secret", message: `cannot load the token secret: ${String(cause)}`, cause })
    }))
    const tokens = makeTokenSigner(secret, ttlSeconds)
    const passwords = yield* makePasswords({
      cost: options.bcryptRounds ?? 10,
      concurrency: options.hashConcurrency ?? 0,
      queue: options.hashQueue ?? 32
    })
    const accounts = yield* makeAccounts({ db, tokens, passwords, durable }).pipe(
      Effect.mapError((error) => new EmbeddedLogicError({ reason: "Database", message: error.message }))
    )

    const statements = yield* Effect.try({
      try: () => prepareStatements(db),
      catch: (cause) =>
        new EmbeddedLogicError({ reason: "Database", message: `cannot prepare statements: ${String(cause)}`, cause })
    })
    const {
      userByName,
      joinSession,
      sessionById,
      insertSession,
      memberReadSeq,
      memberNames,
      memberProfiles,
      otherMember,
      bumpSeq,
      insertMessage,
      fanOutInbox,
      markRead,
      setReadSeq,
      sessionsOf,
      messageAt,
      historyPage,
      contactsOf,
      searchUsers,
      inboxPage,
      presenceUp,
      presenceDown,
      presenceOf,
      dropGateway,
      maxMsgId
    } = statements

    const snowflake = makeSnowflake(options.workerId ?? 0, (maxMsgId.get() as bigint | null) ?? 0n)

    const sessionNameFor = (viewer: string, sessionId: string, type: number, storedName: string): string =>
      type === SessionType.Direct ? (otherMember.get(sessionId, viewer)?.nickname ?? storedName) : storedName

    // --- writes ---------------------------------------------------------------------------

    /** seq_id, message row and every member's inbox row commit together, or not at all. */
    const postTx = db.transaction((input: PostInput): PostOutcome => {
      const session = sessionById.get(input.sessionId)
      if (session === undefined) return { _tag: "NotFound" }
      if (memberReadSeq.get(input.sessionId, input.fromUsername) === undefined) return { _tag: "NotMember" }
      const sessionType = Number(session.type)
      let toUsername = ""
      let recipients: Posted["recipients"] = undefined
      let members: ReadonlyArray<string>
      if (sessionType === SessionType.Direct) {
        const profiles = memberProfiles.all(input.sessionId)
        members = profiles.map((profile) => profile.username)
        toUsername = profiles.find((profile) => profile.username !== input.fromUsername)?.username ?? input.fromUsername
        recipients = profiles.map((profile) => ({
          username: profile.username,
          metaName: profiles.find((other) => other.username !== profile.username)?.nickname ?? profile.nickname
        }))
      } else {
        members = memberNames.all(input.sessionId) as unknown as ReadonlyArray<string>
      }
      const seqId = bumpSeq.get(input.nowMs, input.sessionId) as unknown as bigint
      const row: MessageRow = {
        session_id: input.sessionId,
        seq_id: seqId,
        msg_id: input.msgId,
        from_username: input.fromUsername,
        to_username: toUsername,
        content: input.content,
        type: input.type,
        timestamp: input.timestamp
      }
      insertMessage.run(row)
      fanOutInbox.run(seqId, input.sessionId)
      markRead.run(seqId, input.sessionId, input.fromUsername)
      return { _tag: "Posted", row, sessionType, sessionName: session.name, recipients, members }
    })

    /** A direct session comes into being on its first message when a client skips CreateSession. */
    const sendTx = db.transaction((input: PostInput): PostOutcome => {
      if (sessionById.get(input.sessionId) === undefined) {
        const pair = parseDirectSessionId(input.sessionId)
        if (pair !== undefined && pair[0] !== pair[1] && pair.includes(input.fromUsername)) {
          const canonical = directSessionId(pair[0], pair[1])
          if (canonical === input.sessionId && userByName.get(pair[0]) && userByName.get(pair[1])) {
            insertSession.run(input.sessionId, SessionType.Direct, "", input.fromUsername, input.nowMs, input.nowMs)
            joinSession.run(pair[0], input.nowMs, input.sessionId)
            joinSession.run(pair[1], input.nowMs, input.sessionId)
          }
        }
      }
      return postTx(input)
    })
    const sendCommit = makeGroupCommit(db, sendTx, wal.flush)

    const createTx = db.transaction(
      (
        creator: string,
        members: ReadonlyArray<string>,
        type: number,
        name: string,
        groupId: string,
        systemMessage: (sessionId: string) => PostInput
      ): CreateOutcome => {
        for (const username of members) {
          if (userByName.get(username) === undefined) return { _tag: "UnknownUser", username }
        }
        const sessionId = type === SessionType.Direct ? directSessionId(members[0]!, members[1]!) : groupId
        if (type === SessionType.Direct && sessionById.get(sessionId) !== undefined) {
          return { _tag: "Existing", sessionId }
        }
        const post = systemMessage(sessionId)
        insertSession.run(sessionId, type, name, creator, post.nowMs, post.nowMs)
        for (const username of members) joinSession.run(username, post.nowMs, sessionId)
        return { _tag: "Created", sessionId, posted: postTx(post) }
      }
    )

    const presenceTx = db.transaction((batch: PresenceBatch) => {
      for (const event of batch.offlineBatch) presenceDown.run(event.username, batch.gatewayId)
      for (const event of batch.onlineBatch) {
        presenceUp.run(event.username, batch.gatewayId, event.remoteIp, event.timestamp)
      }
    })

    const readPositionTx = db.transaction((input: ReadPositionInput) => {
      const session = sessionById.get(input.sessionId)
      if (session === undefined) return { _tag: "NotFound" } as const
      const current = memberReadSeq.get(input.sessionId, input.username) as bigint | undefined
      if (current === undefined) return { _tag: "NotMember" } as const
      const target = input.seqId < session.max_seq ? input.seqId : session.max_seq
      const next = target > current ? target : current
      if (next !== current) setReadSeq.run(next, input.sessionId, input.username)
      return { _tag: "Updated", unread: session.max_seq - next } as const
    })

    // --- reads: one transaction each, so every page is a consistent snapshot ---------------

    const sessionListTx = db.transaction((username: string, after: SessionCursor, limit: number): SessionPage => {
      const rows = sessionsOf.all({ username, activeAt: after.activeAt, sessionId: after.sessionId, limit: limit + 1 })
      const last = rows.length > limit ? rows[limit - 1] : undefined
      const sessions = rows.slice(0, limit).map((row): SessionInfo => {
        const type = Number(row.type)
        let name = row.name
        let avatarUrl = row.avatar_url
        if (type === SessionType.Direct) {
          const other = otherMember.get(row.session_id, username)
          if (other !== undefined) {
            name = other.nickname
            avatarUrl = other.avatar_url
          }
        }
        const lastMessage = row.max_seq > 0n ? messageAt.get(row.session_id, row.max_seq) : undefined
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

    const historyTx = db.transaction((input: HistoryInput, before: bigint, limit: number) => {
      const session = sessionById.get(input.sessionId)
      if (session === undefined) return { _tag: "NotFound" } as const
      if (memberReadSeq.get(input.sessionId, input.username) === undefined) return { _tag: "NotMember" } as const
      const type = Number(session.type)
      const meta: SessionMeta = { name: sessionNameFor(input.username, input.sessionId, type, session.name), type }
      const rows = historyPage.all(input.sessionId, before, limit)
      // Newest first from the query: keep the newest that fit the byte budget, return them ascending.
      const kept = rows.length === 0 ? 0 : rowsWithin(rows, maxPageBytes)
      const messages: Array<PushMessage> = []
      for (let i = kept - 1; i >= 0; i--) messages.push(toPush(rows[i]!, meta))
      return { _tag: "Page", messages } as const
    })

    const inboxTx = db.transaction((username: string, cursor: bigint, limit: number): InboxPage => {
      const rows = inboxPage.all(username, cursor, limit + 1)
      const names = new Map<string, string>()
      const events: Array<InboxEvent> = []
      const kept = Math.min(limit, rowsWithin(rows, maxPageBytes))
      for (let i = 0; i < kept; i++) {
        const row = rows[i]!
        const type = Number(row.session_type)
        let name = names.get(row.session_id)
        if (name === undefined) {
          name = sessionNameFor(username, row.session_id, type, row.session_name)
          names.set(row.session_id, name)
        }
        events.push({ inboxId: row.inbox_id, message: toPush(row, { name, type }) })
      }
      const nextCursorId = events.length > 0 ? events[events.length - 1]!.inboxId : cursor
      return { events, nextCursorId, hasMore: rows.length > kept }
    })

    const publishPosted = (posted: Posted, origin: ChatOrigin | undefined): Effect.Effect<void> => {
      const deliveries =
        posted.recipients === undefined
          ? publish(posted.members, toPush(posted.row, { name: posted.sessionName, type: posted.sessionType }), origin)
          : Effect.forEach(
            posted.recipients,
            (recipient) =>
              publish(
                [recipient.username],
                toPush(posted.row, { name: recipient.metaName, type: posted.sessionType }),
                origin
              ),
            { discard: true }
          )
      // The message is committed whatever happens to the push: recipients catch up from their inbox.
      return deliveries.pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("embedded logic: publishing a committed message failed", cause))
      )
    }

    const postOutcomeToResult = (outcome: PostOutcome): Effect.Effect<Posted, LogicError> => {
      switch (outcome._tag) {
        case "Posted":
          return Effect.succeed(outcome)
        case "NotFound":
          return Effect.fail(logicError("not_found", "session not found"))
        case "NotMember":
          return Effect.fail(logicError("permission_denied", NOT_MEMBER))
      }
    }

    // --- the port -------------------------------------------------------------------------

    // No span of its own: it runs under the Dispatcher's chat span, and this is the hot path.
    const sendMessage = (chat: ChatRequest, origin?: ChatOrigin) => Effect.gen(function*() {
      // The gateway's rules, checked again: a gRPC caller is not necessarily a gateway of ours.
      const problem = validateChat(chat, chatRules)
      if (problem !== undefined) return yield* Effect.fail(logicError("invalid_argument", problem))
      const sessionId = chat.sessionId !== "" ? chat.sessionId : directSessionId(chat.fromUsername, chat.toUsername)
      const nowMs = yield* Clock.currentTimeMillis
      const outcome = yield* sendCommit.submit({
        sessionId,
        fromUsername: chat.fromUsername,
        content: chat.content,
        type: messageTypeOf(chat.type),
        // Logic's clock, whatever the caller sent: a message's time is a server-owned fact.
        timestamp: BigInt(Math.floor(nowMs / 1000)),
        msgId: snowflake.next(nowMs),
        nowMs
      }).pipe(Effect.catchAll((error) => storageFailure("sendMessage", error)))
      const posted = yield* postOutcomeToResult(outcome)
      yield* publishPosted(posted, origin)
      return { msgId: posted.row.msg_id, seqId: posted.row.seq_id }
    })

    const syncStatus: LogicShape["syncStatus"] = Effect.fn("LogicEmbedded.syncStatus")(function*(batch) {
      if (batch.gatewayId === "") return yield* Effect.fail(logicError("invalid_argument", "gateway_id is required"))
      yield* attempt("syncStatus", () => presenceTx.immediate(batch))
    })

    const getSessionList: LogicShape["getSessionList"] = Effect.fn("LogicEmbedded.getSessionList")(
      function*(username, page) {
        const after = page === undefined || page.pageToken === "" ? firstPage : decodeSessionCursor(page.pageToken)
        if (after === undefined) return yield* Effect.fail(logicError("invalid_argument", "page_token is not one this gateway gave out"))
        const limit = clampLimit(page?.limit ?? 0n, sessionPageSize, sessionPageSize)
        return yield* attempt("getSessionList", () => sessionListTx(username, after, limit))
      }
    )

    const createSession: LogicShape["createSession"] = Effect.fn("LogicEmbedded.createSession")(function*(input) {
      const plan = planSession(
        { creator: input.creatorUsername, members: input.members, name: input.name, type: input.type },
        sessionRules
      )
      if (plan._tag === "Invalid") return yield* Effect.fail(logicError("invalid_argument", plan.message))
      const { type, members, name } = plan
      const creator = members[0]!
      const nowMs = yield* Clock.currentTimeMillis
      const groupId = type === SessionType.Group ? `group:${snowflake.next(nowMs)}` : ""
      const content = type === SessionType.Direct ? `${creator} started a conversation` : `${creator} created the group "${name}"`
      const outcome = yield* attempt("createSession", () =>
        createTx.immediate(creator, members, type, name, groupId, (sessionId) => ({
          sessionId,
          fromUsername: creator,
          content,
          type: "system",
          timestamp: BigInt(Math.floor(nowMs / 1000)),
          msgId: snowflake.next(nowMs),
          nowMs
        }))
      )
      yield* durable
      switch (outcome._tag) {
        case "UnknownUser":
          return yield* Effect.fail(logicError("not_found", `user "${outcome.username}" not found`))
        case "Existing":
          return outcome.sessionId
        case "Created": {
          const posted = yield* postOutcomeToResult(outcome.posted)
          yield* publishPosted(posted, undefined)
          return outcome.sessionId
        }
      }
    })

    const getHistoryMessages: LogicShape["getHistoryMessages"] = Effect.fn("LogicEmbedded.getHistoryMessages")(
      function*(input) {
        const limit = clampLimit(input.limit, HISTORY_DEFAULT, HISTORY_MAX)
        const before = input.beforeSeq > 0n ? input.beforeSeq : MAX_INT64
        const outcome = yield* attempt("getHistoryMessages", () => historyTx(input, before, limit))
        if (outcome._tag === "NotFound") return yield* Effect.fail(logicError("not_found", "session not found"))
        if (outcome._tag === "NotMember") return yield* Effect.fail(logicError("permission_denied", NOT_MEMBER))
        return outcome.messages
      }
    )

    const getContactList: LogicShape["getContactList"] = Effect.fn("LogicEmbedded.getContactList")(function*(username) {
      return yield* attempt("getContactList", () => contactsOf.all(username).map(toContact))
    })

    const searchUser: LogicShape["searchUser"] = Effect.fn("LogicEmbedded.searchUser")(function*(query) {
      const trimmed = query.trim()
      if (trimmed === "") return []
      return yield* attempt("searchUser", () =>
        searchUsers
          .all({ exact: trimmed, prefix: prefixPattern(trimmed), contains: containsPattern(trimmed), limit: SEARCH_LIMIT })
          .map(toContact)
      )
    })

    const updateReadPosition: LogicShape["updateReadPosition"] = Effect.fn("LogicEmbedded.updateReadPosition")(
      function*(input) {
        const outcome = yield* attempt("updateReadPosition", () => readPositionTx.immediate(input))
        if (outcome._tag === "NotFound") return yield* Effect.fail(logicError("not_found", "session not found"))
        if (outcome._tag === "NotMember") return yield* Effect.fail(logicError("permission_denied", NOT_MEMBER))
        return outcome.unread
      }
    )

    const pullInboxDelta: LogicShape["pullInboxDelta"] = Effect.fn("LogicEmbedded.pullInboxDelta")(function*(input) {
      const limit = clampLimit(input.limit, INBOX_DEFAULT, INBOX_MAX)
      const cursor = input.cursorId > 0n ? input.cursorId : 0n
      return yield* attempt("pullInboxDelta", () => inboxTx(input.username, cursor, limit))
    })

    const onlineGateways: EmbeddedLogic["onlineGateways"] = (usernames) =>
      attempt("onlineGateways", () => {
        const result = new Map<string, Set<string>>()
        for (const username of new Set(usernames)) {
          for (const row of presenceOf.all(username)) {
            let gateways = result.get(row.username)
            if (gateways === undefined) result.set(row.username, (gateways = new Set()))
            gateways.add(row.gateway_id)
          }
        }
        return result
      })

    const forgetGateway: EmbeddedLogic["forgetGateway"] = (gatewayId) =>
      attempt("forgetGateway", () => dropGateway.run(gatewayId).changes)

    return {
      ...accounts,
      sendMessage,
      syncStatus,
      getSessionList,
      createSession,
      getHistoryMessages,
      getContactList,
      searchUser,
      updateReadPosition,
      pullInboxDelta,
      onlineGateways,
      forgetGateway
    } satisfies EmbeddedLogic
  })

/** The lower-level constructor under its conventional name. */
export const make = makeEmbeddedLogic

/** The embedded Logic as the `Logic` port; committed messages are delivered through PushDelivery. */
export const layer = (options: LogicEmbeddedOptions): Layer.Layer<Logic, EmbeddedLogicError, PushDelivery> =>
  Layer.scoped(
    Logic,
    Effect.gen(function*() {
      const delivery = yield* PushDelivery
      return yield* makeEmbeddedLogic(options, (recipients, message, origin) =>
        Effect.sync(() => {
          delivery.deliverNow(
            recipients,
            message,
            origin === undefined ? undefined : { excludeConnectionId: origin.connectionId }
          )
        }))
    })
  )

const MESSAGE_COLUMNS = "m.session_id, m.seq_id, m.msg_id, m.from_username, m.to_username, m.content, m.type, m.timestamp"

const prepareStatements = (db: Database.Database) => ({
  userByName: db.prepare<[string], UserRow>("SELECT username, nickname, avatar_url FROM users WHERE username = ?"),
  // A new member starts with everything already in the session marked read.
  joinSession: db.prepare<[string, number, string], void>(
    `INSERT OR IGNORE INTO session_members (session_id, username, last_read_seq, joined_at)
     SELECT session_id, ?, max_seq, ? FROM sessions WHERE session_id = ?`
  ),
  sessionById: db.prepare<[string], SessionRow>(
    "SELECT session_id, type, name, avatar_url, max_seq FROM sessions WHERE session_id = ?"
  ),
  insertSession: db.prepare<[string, number, string, string, number, number], void>(
    `INSERT INTO sessions (session_id, type, name, creator, created_at, last_active_at) VALUES (?, ?, ?, ?, ?, ?)`
  ),
  memberReadSeq: db
    .prepare<[string, string], bigint>(
      "SELECT last_read_seq FROM session_members WHERE session_id = ? AND username = ?"
    )
    .pluck(),
  memberNames: db.prepare<[string], string>("SELECT username FROM session_members WHERE session_id = ?").pluck(),
  memberProfiles: db.prepare<[string], UserRow>(
    `SELECT u.username, u.nickname, u.avatar_url FROM session_members sm JOIN users u ON u.username = sm.username
     WHERE sm.session_id = ? ORDER BY u.username`
  ),
  otherMember: db.prepare<[string, string], UserRow>(
    `SELECT u.username, u.nickname, u.avatar_url FROM session_members sm JOIN users u ON u.username = sm.username
     WHERE sm.session_id = ? AND sm.username <> ? LIMIT 1`
  ),
  bumpSeq: db
    .prepare<[number, string], bigint>(
      "UPDATE sessions SET max_seq = max_seq + 1, last_active_at = ? WHERE session_id = ? RETURNING max_seq"
    )
    .pluck(),
  insertMessage: db.prepare<[MessageRow], void>(
    `INSERT INTO messages (session_id, seq_id, msg_id, from_username, to_username, content, type, timestamp)
     VALUES (@session_id, @seq_id, @msg_id, @from_username, @to_username, @content, @type, @timestamp)`
  ),
  fanOutInbox: db.prepare<[bigint, string], void>(
    `INSERT INTO inbox (username, session_id, seq_id) SELECT username, session_id, ? FROM session_members
     WHERE session_id = ? ORDER BY username`
  ),
  markRead: db.prepare<[bigint, string, string], void>(
    "UPDATE session_members SET last_read_seq = MAX(last_read_seq, ?) WHERE session_id = ? AND username = ?"
  ),
  setReadSeq: db.prepare<[bigint, string, string], void>(
    "UPDATE session_members SET last_read_seq = ? WHERE session_id = ? AND username = ?"
  ),
  sessionsOf: db.prepare<[{ username: string; activeAt: bigint; sessionId: string; limit: number }], MemberSessionRow>(
    `SELECT s.session_id, s.type, s.name, s.avatar_url, s.max_seq, s.last_active_at, sm.last_read_seq
     FROM session_members sm JOIN sessions s ON s.session_id = sm.session_id
     WHERE sm.username = @username
       AND (s.last_active_at < @activeAt OR (s.last_active_at = @activeAt AND s.session_id > @sessionId))
     ORDER BY s.last_active_at DESC, s.session_id LIMIT @limit`
  ),
  messageAt: db.prepare<[string, bigint], MessageRow>(
    `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.session_id = ? AND m.seq_id = ?`
  ),
  historyPage: db.prepare<[string, bigint, number], MessageRow>(
    `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.session_id = ? AND m.seq_id < ? ORDER BY m.seq_id DESC LIMIT ?`
  ),
  contactsOf: db.prepare<[string], UserRow>(
    `SELECT DISTINCT u.username, u.nickname, u.avatar_url
     FROM session_members me
     JOIN sessions s ON s.session_id = me.session_id AND s.type = ${SessionType.Direct}
     JOIN session_members other ON other.session_id = me.session_id AND other.username <> me.username
     JOIN users u ON u.username = other.username
     WHERE me.username = ? ORDER BY u.username`
  ),
  searchUsers: db.prepare<[{ exact: string; prefix: string; contains: string; limit: number }], UserRow>(
    `SELECT username, nickname, avatar_url FROM users
     WHERE username LIKE @contains ESCAPE '\\' OR nickname LIKE @contains ESCAPE '\\'
     ORDER BY CASE WHEN username = @exact COLLATE NOCASE THEN 0
                   WHEN username LIKE @prefix ESCAPE '\\' THEN 1 ELSE 2 END, username
     LIMIT @limit`
  ),
  inboxPage: db.prepare<[string, bigint, number], InboxRow>(
    `SELECT i.inbox_id, ${MESSAGE_COLUMNS}, s.type AS session_type, s.name AS session_name
     FROM inbox i
     JOIN messages m ON m.session_id = i.session_id AND m.seq_id = i.seq_id
     JOIN sessions s ON s.session_id = i.session_id
     WHERE i.username = ? AND i.inbox_id > ? ORDER BY i.inbox_id LIMIT ?`
  ),
  presenceUp: db.prepare<[string, string, string, bigint], void>(
    `INSERT INTO presence (username, gateway_id, remote_ip, since) VALUES (?, ?, ?, ?)
     ON CONFLICT (username, gateway_id) DO UPDATE SET remote_ip = excluded.remote_ip, since = excluded.since`
  ),
  presenceDown: db.prepare<[string, string], void>("DELETE FROM presence WHERE username = ? AND gateway_id = ?"),
  presenceOf: db.prepare<[string], PresenceRow>(
    "SELECT username, gateway_id FROM presence WHERE username = ? ORDER BY gateway_id"
  ),
  dropGateway: db.prepare<[string], void>("DELETE FROM presence WHERE gateway_id = ?"),
  maxMsgId: db.prepare<[], bigint | null>("SELECT MAX(msg_id) FROM messages").pluck()
})
