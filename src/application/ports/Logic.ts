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
/** Where a chat came from, as far as Logic cares. */
export interface ChatOrigin {
  /** Names this send across retries: Logic stores a message once per key and sender. */
  readonly idempotencyKey?: string
}

/** One chat of a batch: the request and its idempotency key (flat: one object per chat on the hot path). */
export interface ChatItem extends ChatOrigin {
  readonly chat: ChatRequest
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
   * Several chats in one Effect, answered together: one result per item, in order. A chat Logic
   * refused is a `Left` in its place; the Effect itself does not fail.
   */
  readonly sendMessages: (
    items: ReadonlyArray<ChatItem>
  ) => Effect.Effect<ReadonlyArray<Either.Either<SendMessageResult, LogicError>>>
  /**
   * Whether `sendMessages` should get the chats of a whole turn at once. True for an in-process
   * Logic, which commits them together (one transaction, one WAL flush). False for a Logic over
   * the network: each chat is its own RPC within its own deadline, so the Dispatcher sends them
   * one per call and a slow chat holds back no other chat's ack.
   */
  readonly batchesChats: boolean
  /**
   * `sendMessages` without an Effect, for an in-process Logic that batches chats: `done` is called
   * once, with one result per item in order, when the batch is durable. The chat path uses it when
   * present, so a batch of chats costs no fiber (issue 27: chat CPU). A wrapper that spreads a
   * Logic and overrides `sendMessage` or `sendMessages` must override or drop this one too, or
   * the Dispatcher goes around it.
   */
  readonly sendMessagesNow?: (
    items: ReadonlyArray<ChatItem>,
    done: (results: ReadonlyArray<Either.Either<SendMessageResult, LogicError>>) => void
  ) => void
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

/** `sendMessages` for a Logic whose chats are independent calls (over the network): all at once, each with its own answer. */
export const sendEach = (sendMessage: LogicShape["sendMessage"]): LogicShape["sendMessages"] => (items) =>
  items.length === 1
    ? Effect.map(Effect.either(sendMessage(items[0]!.chat, items[0])), (result) => [result])
    : Effect.forEach(items, (item) => Effect.either(sendMessage(item.chat, item)), { concurrency: "unbounded" })

/** The Logic service: in-process on SQLite (embedded mode) or over gRPC (cluster mode). */
export class Logic extends Context.Tag("resonance/Logic")<Logic, LogicShape>() {
  /**
   * A Logic that answers every call with `unavailable`; override the methods a test needs
   * (`sendMessages` follows an overridden `sendMessage` unless given; chats go one per call
   * unless `batchesChats` says otherwise).
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
  sendMessages: (items) => Effect.succeed(items.map(() => Either.left(logicError("unavailable", "logic service is unavailable")))),
  batchesChats: false,
  syncStatus: down,
  getSessionList: down,
  createSession: down,
  getHistoryMessages: down,
  getContactList: down,
  searchUser: down,
  updateReadPosition: down,
  pullInboxDelta: down
}

/**
 * What pushing committed messages needs of a Logic besides them, when no Task service does it
 * (the reference Logic): where users are online (from SyncStatus), and what an inbox gained since
 * a time, for the user whose socket opened before their route reached Logic.
 */
export interface LogicRoutesShape {
  /** username → ids of the gateways that reported the user online; users online nowhere are absent. */
  readonly onlineGateways: (usernames: ReadonlyArray<string>) => ReadonlyMap<string, ReadonlySet<string>>
  /** A gateway that left: its users are offline there. */
  readonly forgetGateway: (gatewayId: string) => Effect.Effect<unknown, LogicError>
  /** The user's inbox from `sinceMs` (unix milliseconds) on, oldest first, at most `limit` messages. */
  readonly inboxSince: (username: string, sinceMs: number, limit: number) => Effect.Effect<ReadonlyArray<PushMessage>, LogicError>
}

export class LogicRoutes extends Context.Tag("resonance/LogicRoutes")<LogicRoutes, LogicRoutesShape>() {
  /** Nobody online anywhere, empty inboxes; override what a test needs. */
  static readonly layerTest = (overrides: Partial<LogicRoutesShape> = {}): Layer.Layer<LogicRoutes> =>
    Layer.succeed(LogicRoutes, {
      onlineGateways: () => new Map(),
      forgetGateway: () => Effect.void,
      inboxSince: () => Effect.succeed([]),
      ...overrides
    })
}
