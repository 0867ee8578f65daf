import { Context, Effect, Either, Layer } from "effect"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import type {
  AuthResult,
  ChatRequest,
  ContactInfo,
  InboxPage,
  PresenceBatch,
  PushMessage,
  Revocation,
  RevocationPage,
  SendMessageResult,
  SessionPage,
  User
} from "../../domain/Model.js"

/** Request shapes mirror `resonance.logic.v1`, so the gRPC adapter passes them through. */
export interface LoginInput {
  readonly username: string
  readonly password: string
}
export interface RegisterInput extends LoginInput {
  readonly nickname: string
}
export interface CreateSessionInput {
  readonly creatorUsername: string
  readonly members: ReadonlyArray<string>
  readonly name: string
  readonly type: number
}
export interface HistoryInput {
  readonly username: string
  readonly sessionId: string
  readonly limit: bigint
  readonly beforeSeq: bigint
}
export interface ReadPositionInput {
  readonly username: string
  readonly sessionId: string
  readonly seqId: bigint
}
export interface InboxInput {
  readonly username: string
  readonly cursorId: bigint
  readonly limit: bigint
}
export interface PageRequest {
  readonly limit: bigint
  readonly pageToken: string
}
/** Where a chat came from. */
export interface ChatOrigin {
  /** The sending socket, which an in-process Logic does not echo the message to. */
  readonly connectionId?: number
  /** Names this send across retries: Logic stores a message once per key and sender. */
  readonly idempotencyKey?: string
}

/** One chat of a batch, as `sendMessage` takes it. */
export interface ChatItem {
  readonly chat: ChatRequest
  readonly origin: ChatOrigin | undefined
}

export interface LogicShape {
  readonly login: (input: LoginInput) => Effect.Effect<AuthResult, LogicError>
  readonly register: (input: RegisterInput) => Effect.Effect<AuthResult, LogicError>
  /** Fails with `unauthenticated` when the token is not valid (expired, forged, revoked). */
  readonly validateToken: (accessToken: string) => Effect.Effect<User, LogicError>
  /** Logout: stores the token's revocation; fails with `unauthenticated` for a token that is not valid. */
  readonly revokeToken: (accessToken: string) => Effect.Effect<Revocation, LogicError>
  /** Revocations after `afterCursor` (0: every one not yet expired), oldest first. */
  readonly listRevocations: (afterCursor: bigint, limit: number) => Effect.Effect<RevocationPage, LogicError>
  /** Fails with the business error (e.g. "not a session member") or an outage. */
  readonly sendMessage: (chat: ChatRequest, origin?: ChatOrigin) => Effect.Effect<SendMessageResult, LogicError>
  /**
   * The chats of one turn of the event loop: one Effect for the batch, not one per frame. Each is
   * answered through `answer` as soon as its own result is known (a slow one holds no other back);
   * an in-process Logic commits them together.
   */
  readonly sendMessages: (
    items: ReadonlyArray<ChatItem>,
    answer: (index: number, result: Either.Either<SendMessageResult, LogicError>) => void
  ) => Effect.Effect<void>
  readonly syncStatus: (batch: PresenceBatch) => Effect.Effect<void, LogicError>
  /** One page of the user's sessions (limit 0: Logic's page size; token "": the first page). */
  readonly getSessionList: (username: string, page?: PageRequest) => Effect.Effect<SessionPage, LogicError>
  readonly createSession: (input: CreateSessionInput) => Effect.Effect<string, LogicError>
  readonly getHistoryMessages: (input: HistoryInput) => Effect.Effect<ReadonlyArray<PushMessage>, LogicError>
  readonly getContactList: (username: string) => Effect.Effect<ReadonlyArray<ContactInfo>, LogicError>
  readonly searchUser: (query: string) => Effect.Effect<ReadonlyArray<ContactInfo>, LogicError>
  /** Returns the caller's unread count in the session after the update. */
  readonly updateReadPosition: (input: ReadPositionInput) => Effect.Effect<bigint, LogicError>
  readonly pullInboxDelta: (input: InboxInput) => Effect.Effect<InboxPage, LogicError>
}

/** `sendMessages` for a Logic whose calls are independent (over the network): each chat its own call, all at once. */
export const sendEach = (sendMessage: LogicShape["sendMessage"]): LogicShape["sendMessages"] => (items, answer) =>
  Effect.forEach(
    items,
    (item, index) => Effect.map(Effect.either(sendMessage(item.chat, item.origin)), (result) => answer(index, result)),
    { concurrency: "unbounded", discard: true }
  )

/** The Logic service: in-process on SQLite (embedded mode) or over gRPC (cluster mode). */
export class Logic extends Context.Tag("resonance/Logic")<Logic, LogicShape>() {
  /**
   * A Logic that answers every call with `unavailable`; override the methods a test needs
   * (`sendMessages` follows an overridden `sendMessage` unless given).
   */
  static readonly layerTest = (overrides: Partial<LogicShape> = {}): Layer.Layer<Logic> =>
    Layer.succeed(Logic, withDefaults(overrides))
}

/** A whole Logic from some of its methods: the rest unavailable, `sendMessages` from `sendMessage`. */
export const withDefaults = (overrides: Partial<LogicShape>): LogicShape => {
  const sendMessage = overrides.sendMessage ?? unavailableLogic.sendMessage
  return { ...unavailableLogic, ...overrides, sendMessages: overrides.sendMessages ?? sendEach(sendMessage) }
}

const down = () => Effect.fail(logicError("unavailable", "logic service is unavailable"))

export const unavailableLogic: LogicShape = {
  login: down,
  register: down,
  validateToken: down,
  revokeToken: down,
  listRevocations: down,
  sendMessage: down,
  sendMessages: (items, answer) =>
    Effect.sync(() => items.forEach((_, index) => answer(index, Either.left(logicError("unavailable", "logic service is unavailable"))))),
  syncStatus: down,
  getSessionList: down,
  createSession: down,
  getHistoryMessages: down,
  getContactList: down,
  searchUser: down,
  updateReadPosition: down,
  pullInboxDelta: down
}
