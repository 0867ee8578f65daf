import type Database from "better-sqlite3"
import { Cause, Clock, Effect, Either, Runtime } from "effect"
import type { CommittedShape } from "../../application/Committed.js"
import type { ChatOrigin, LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { logicError, NOT_A_MEMBER } from "../../domain/Errors.js"
import type { ChatRequest, PushMessage, SendMessageResult, SessionMeta } from "../../domain/Model.js"
import { messageTypeOf, SessionType } from "../../domain/Model.js"
import type { ChatRules } from "../../domain/Packet.js"
import { validateChat } from "../../domain/Packet.js"
import type { SessionRules } from "../../domain/Session.js"
import { directSessionId, parseDirectSessionId, planSession } from "../../domain/Session.js"
import type { GroupCommit } from "./GroupCommit.js"
import type { CachedSession, Member, SessionCache } from "./SessionCache.js"
import type { Snowflake } from "./Snowflake.js"
import type { Prepare } from "./Statements.js"
import { sharedRunnerScheduler } from "./SharedScheduler.js"
import { attempt, logStorageFailure, storageError, storageFailure } from "./Storage.js"

export interface MessageRow {
  readonly session_id: string
  readonly seq_id: bigint
  readonly msg_id: bigint
  readonly from_username: string
  readonly to_username: string
  readonly content: string
  readonly type: string
  readonly timestamp: bigint
}

export const toPush = (row: MessageRow, sessionMeta: SessionMeta | undefined): PushMessage => ({
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

/** The session name a member sees: the other member's nickname in a direct session. */
export const sessionNameFor = (cache: SessionCache, session: CachedSession, viewer: string): string =>
  session.type === SessionType.Direct ? (cache.otherMember(session, viewer)?.nickname ?? session.name) : session.name

/**
 * A new session's first message, in the words of upstream's Logic (`buildSystemMessageContent`),
 * which the official Chinese client shows as it is: the creator by nickname.
 */
export const sessionCreatedText = (type: number, creatorNickname: string, name: string): string =>
  type === SessionType.Direct ? `${creatorNickname} 开始了与你的对话` : `${creatorNickname} 创建了群聊「${name}」`

interface Posted {
  readonly _tag: "Posted"
  readonly row: MessageRow
  readonly session: CachedSession
}

type PostOutcome =
  | Posted
  | { readonly _tag: "Duplicate"; readonly msgId: bigint; readonly seqId: bigint }
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "NotMember" }

export interface MessagesOptions {
  readonly db: Database.Database
  readonly prepare: Prepare
  readonly cache: SessionCache
  readonly snowflake: Snowflake
  readonly commit: GroupCommit
  readonly durable: Effect.Effect<void, LogicError>
  /** Where each committed message goes (the `Committed` queue): plain, per message. */
  readonly publish: CommittedShape["offer"]
  readonly chatRules: ChatRules
  readonly sessionRules: SessionRules
}

export type Messages = Pick<
  LogicShape,
  "sendMessage" | "sendMessages" | "sendMessagesNow" | "batchesChats" | "createSession" | "updateReadPosition"
>

/**
 * The write side. A message is three statements — its row (with its idempotency key), the
 * session's position, the sender's read position — because members, types and positions come
 * from the session cache. Once its batch is durable it is handed to `publish`, whose consumer
 * pushes it after the batch's acks are written.
 */
export const makeMessages = (options: MessagesOptions): Effect.Effect<Messages, LogicError> =>
  Effect.gen(function*() {
    const { db, prepare, cache, snowflake, commit, durable, publish, chatRules, sessionRules } = options
    const clock = yield* Effect.clock
    // For what the plain chat path has to log (a storage failure, a publish that threw).
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const statements = yield* attempt("preparing messages", () => ({
      // Positional parameters, no `{ ...row, client_key }`: on Node 20's V8 an object spread
      // followed by another property made what each message's row points to (ids, content, key)
      // outlive two scavenges, ~1 MB promoted per scavenge at 2,000 msg/s and a mark-compact
      // every ~15 s of chat (bench/README.md, "The chat path").
      insertMessage: prepare<[string, bigint, bigint, string, string, string, string, bigint, string | null]>(
        `INSERT INTO messages (session_id, seq_id, msg_id, from_username, to_username, content, type, timestamp, client_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (from_username, client_key) WHERE client_key IS NOT NULL DO NOTHING`
      ),
      messageByKey: prepare<[string, string], { readonly msg_id: bigint; readonly seq_id: bigint }>(
        "SELECT msg_id, seq_id FROM messages WHERE from_username = ? AND client_key = ?"
      ),
      advanceSession: prepare<[bigint, bigint, number, string]>(
        "UPDATE sessions SET max_seq = ?, last_msg_id = ?, last_active_at = ? WHERE session_id = ?"
      ),
      markRead: prepare<[bigint, string, string]>(
        "UPDATE session_members SET last_read_seq = MAX(last_read_seq, ?) WHERE session_id = ? AND username = ?"
      ),
      insertSession: prepare<[string, number, string, string, number, number]>(
        "INSERT INTO sessions (session_id, type, name, creator, created_at, last_active_at) VALUES (?, ?, ?, ?, ?, ?)"
      ),
      addMember: prepare<[string, string, number]>(
        "INSERT OR IGNORE INTO session_members (session_id, username, last_read_seq, joined_seq, joined_at) VALUES (?, ?, 0, 0, ?)"
      ),
      profile: prepare<[string], { readonly username: string; readonly nickname: string; readonly avatar_url: string }>(
        "SELECT username, nickname, avatar_url FROM users WHERE username = ?"
      ),
      readSeq: prepare<[string, string], bigint>(
        "SELECT last_read_seq FROM session_members WHERE session_id = ? AND username = ?",
        { pluck: true }
      ),
      setReadSeq: prepare<[bigint, string, string]>(
        "UPDATE session_members SET last_read_seq = ? WHERE session_id = ? AND username = ?"
      )
    }))

    // --- fan-out, once durable -------------------------------------------------------------

    /** Thrown while publishing (a bug): reported once by the Effect that committed it, never failing a stored send. */
    let publishFailure: unknown = undefined
    const publishPosted = ({ row, session }: Posted) => {
      try {
        if (session.type === SessionType.Direct) {
          // Each side sees the session under the other's name.
          for (const member of cache.membersOf(session).values()) {
            publish([member.username], toPush(row, { name: sessionNameFor(cache, session, member.username), type: session.type }))
          }
        } else {
          publish(cache.memberNames(session), toPush(row, { name: session.name, type: session.type }))
        }
      } catch (error) {
        publishFailure ??= error
      }
    }
    const reportPublishFailure = <A>(value: A): Effect.Effect<A> => {
      if (publishFailure === undefined) return Effect.succeed(value)
      const error = publishFailure
      publishFailure = undefined
      return Effect.as(Effect.logError("committed messages not published (they are in the inboxes)", error), value)
    }

    // --- writes, inside a transaction -------------------------------------------------------

    /**
     * Appends a message to a session whose membership was checked, and moves `readBy` (the
     * sender; the creator for a session's first, system, message) past it. No read of its own.
     */
    const post = (
      session: CachedSession,
      from: string,
      readBy: string,
      content: string,
      type: string,
      key: string | null,
      nowMs: number
    ): PostOutcome => {
      const seq = session.maxSeq + 1n
      const row: MessageRow = {
        session_id: session.sessionId,
        seq_id: seq,
        // Taken inside the transaction: msg_id order is commit order, which inbox cursors rely on.
        msg_id: snowflake.next(nowMs),
        from_username: from,
        to_username: session.type === SessionType.Direct && from === readBy ? (cache.otherMember(session, from)?.username ?? from) : "",
        content,
        type,
        // Logic's clock, whatever the caller sent: a message's time is a server-owned fact.
        timestamp: BigInt(Math.floor(nowMs / 1000))
      }
      const inserted = statements.insertMessage.run(
        row.session_id, row.seq_id, row.msg_id, row.from_username, row.to_username, row.content, row.type, row.timestamp, key
      )
      if (inserted.changes === 0) {
        const first = statements.messageByKey.get(from, key!)!
        return { _tag: "Duplicate", msgId: first.msg_id, seqId: first.seq_id }
      }
      statements.advanceSession.run(seq, row.msg_id, nowMs, session.sessionId)
      statements.markRead.run(seq, session.sessionId, readBy)
      session.maxSeq = seq
      session.lastMsgId = row.msg_id
      return { _tag: "Posted", row, session }
    }

    const memberOf = (username: string, joinedAt: bigint): Member | undefined => {
      const profile = statements.profile.get(username)
      return profile === undefined
        ? undefined
        : { username, nickname: profile.nickname, avatarUrl: profile.avatar_url, joinedSeq: joinedAt }
    }

    /** Writes a session and its members (all at position 0), and caches it. */
    const createRows = (sessionId: string, type: number, name: string, creator: string, members: ReadonlyArray<Member>, nowMs: number) => {
      statements.insertSession.run(sessionId, type, name, creator, nowMs, nowMs)
      for (const member of members) statements.addMember.run(sessionId, member.username, nowMs)
      const session: CachedSession = {
        sessionId,
        type,
        name,
        avatarUrl: "",
        maxSeq: 0n,
        lastMsgId: 0n,
        members: new Map(members.map((member) => [member.username, member])),
        memberNames: undefined
      }
      cache.add(session)
      return session
    }

    /** A direct session comes into being on its first message when a client skips CreateSession. */
    const sessionForChat = (sessionId: string, from: string, nowMs: number): CachedSession | undefined => {
      const known = cache.get(sessionId)
      if (known !== undefined) return known
      const pair = parseDirectSessionId(sessionId)
      if (pair === undefined || pair[0] === pair[1] || !pair.includes(from) || directSessionId(pair[0], pair[1]) !== sessionId) {
        return undefined
      }
      const members = pair.map((username) => memberOf(username, 0n))
      if (members.some((member) => member === undefined)) return undefined
      return createRows(sessionId, SessionType.Direct, "", from, members as Array<Member>, nowMs)
    }

    const notFound = logicError("not_found", "session not found")
    const notMember = logicError("permission_denied", NOT_A_MEMBER)

    /** One chat's answer, from what storing it did; a new message is published. Plain: runs per chat. */
    const settle = (stored: PostOutcome | LogicError): Either.Either<SendMessageResult, LogicError> => {
      switch (stored._tag) {
        case "LogicError":
          return Either.left(stored)
        case "NotFound":
          return Either.left(notFound)
        case "NotMember":
          return Either.left(notMember)
        case "Duplicate":
          return Either.right({ msgId: stored.msgId, seqId: stored.seqId })
        case "Posted":
          publishPosted(stored)
          return Either.right({ msgId: stored.row.msg_id, seqId: stored.row.seq_id })
      }
    }

    /** Checks a chat and, inside the batch's transaction, stores it. Plain: runs per chat. */
    const store = (chat: ChatRequest, idempotencyKey: string | undefined, nowMs: number): PostOutcome | LogicError => {
      // The gateway's rules, checked again: a gRPC caller is not necessarily a gateway of ours.
      const problem = validateChat(chat, chatRules)
      if (problem !== undefined) return logicError("invalid_argument", problem)
      const sessionId = chat.sessionId !== "" ? chat.sessionId : directSessionId(chat.fromUsername, chat.toUsername)
      const key = idempotencyKey === undefined || idempotencyKey === "" ? null : idempotencyKey
      const session = sessionForChat(sessionId, chat.fromUsername, nowMs)
      if (session === undefined) return { _tag: "NotFound" }
      if (!cache.membersOf(session).has(chat.fromUsername)) return { _tag: "NotMember" }
      return post(session, chat.fromUsername, chat.fromUsername, chat.content, messageTypeOf(chat.type), key, nowMs)
    }

    const failedToStore = storageError("sendMessage")

    // The hot path: one group-commit job for a whole batch of chats, answered plainly once the
    // commit is durable (the Dispatcher calls this with a turn's chats: no fiber per batch).
    const sendMessagesNow: NonNullable<Messages["sendMessagesNow"]> = (items, done) => {
      const nowMs = clock.unsafeCurrentTimeMillis()
      commit.enqueue(() => items.map((item) => store(item.chat, item.idempotencyKey, nowMs)), (outcome) => {
        let results: ReadonlyArray<Either.Either<SendMessageResult, LogicError>>
        if (outcome.ok) {
          results = outcome.value.map(settle)
        } else {
          runFork(logStorageFailure("sendMessage", outcome.error))
          results = items.map(() => Either.left(failedToStore))
        }
        if (publishFailure !== undefined) runFork(reportPublishFailure(undefined))
        try {
          done(results)
        } catch (error) {
          // A bug in whoever answers: the other batches of this commit must still be resumed.
          runFork(Effect.logError("answering stored chats failed", Cause.die(error)))
        }
      })
    }

    // The same as an Effect (the reference Logic's gRPC server, a traced chat), resumed on the
    // shared run queue (see SharedScheduler).
    const sendMessages: Messages["sendMessages"] = (items) =>
      Effect.withScheduler(
        Effect.async((resume) => sendMessagesNow(items, (results) => resume(Effect.succeed(results)))),
        sharedRunnerScheduler
      )

    const sendMessage: Messages["sendMessage"] = (chat: ChatRequest, origin?: ChatOrigin) =>
      Effect.flatMap(sendMessages([{ chat, idempotencyKey: origin?.idempotencyKey }]), ([result]) => result!)

    const createTx = db.transaction((sessionId: string, type: number, name: string, members: ReadonlyArray<Member>, content: string, nowMs: number) => {
      const session = createRows(sessionId, type, name, members[0]!.username, members, nowMs)
      // From `system`, as the Go Logic sends it; the creator has read it.
      return post(session, "system", members[0]!.username, content, "system", null, nowMs) as Posted
    })

    const createSession: Messages["createSession"] = Effect.fn("LogicEmbedded.createSession")(function*(input) {
      const plan = planSession(
        { creator: input.creatorUsername, members: input.members, name: input.name, type: input.type },
        sessionRules
      )
      if (plan._tag === "Invalid") return yield* Effect.fail(logicError("invalid_argument", plan.message))
      const { type, name } = plan
      const members: Array<Member> = []
      for (const username of plan.members) {
        const member = yield* attempt("createSession", () => memberOf(username, 0n))
        if (member === undefined) return yield* Effect.fail(logicError("not_found", `user "${username}" not found`))
        members.push(member)
      }
      const nowMs = yield* Clock.currentTimeMillis
      const sessionId = type === SessionType.Direct ? directSessionId(members[0]!.username, members[1]!.username) : `group:${snowflake.next(nowMs)}`
      if (type === SessionType.Direct && (yield* attempt("createSession", () => cache.get(sessionId))) !== undefined) return sessionId
      const content = sessionCreatedText(type, members[0]!.nickname, name)
      const posted = yield* Effect.suspend(() => {
        try {
          return Effect.succeed(createTx.immediate(sessionId, type, name, members, content, nowMs))
        } catch (error) {
          cache.clear()
          return storageFailure("createSession", error)
        }
      })
      yield* durable
      publishPosted(posted)
      return yield* reportPublishFailure(sessionId)
    })

    const readPositionTx = db.transaction((sessionId: string, username: string, seqId: bigint) => {
      const session = cache.get(sessionId)
      if (session === undefined) return { _tag: "NotFound" } as const
      const current = statements.readSeq.get(sessionId, username)
      if (current === undefined) return { _tag: "NotMember" } as const
      const target = seqId < session.maxSeq ? seqId : session.maxSeq
      const next = target > current ? target : current
      if (next !== current) statements.setReadSeq.run(next, sessionId, username)
      return { _tag: "Updated", unread: session.maxSeq - next } as const
    })

    const updateReadPosition: Messages["updateReadPosition"] = Effect.fn("LogicEmbedded.updateReadPosition")(function*(input) {
      const outcome = yield* attempt("updateReadPosition", () => readPositionTx.immediate(input.sessionId, input.username, input.seqId))
      if (outcome._tag === "NotFound") return yield* Effect.fail(logicError("not_found", "session not found"))
      if (outcome._tag === "NotMember") return yield* Effect.fail(logicError("permission_denied", NOT_A_MEMBER))
      return outcome.unread
    })

    return { sendMessage, sendMessages, sendMessagesNow, batchesChats: true, createSession, updateReadPosition }
  })
