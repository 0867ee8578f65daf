import { Context, Effect, Layer } from "effect"
import type { AuthError, LogicError } from "../domain/Errors.js"
import { logicError } from "../domain/Errors.js"
import type { ContactInfo, InboxPage, PushMessage, SessionPage } from "../domain/Model.js"
import type { SessionRules } from "../domain/Session.js"
import { defaultSessionRules, isRequestedSessionType, missingMembersProblem, planSession } from "../domain/Session.js"
import type { Principal } from "./Authenticator.js"
import { Authenticator } from "./Authenticator.js"
import type { CreateSessionInput, HistoryInput, InboxInput, PageRequest, ReadPositionInput } from "./ports/Logic.js"
import { Logic } from "./ports/Logic.js"

/** What a caller asks for; who is asking comes from the token, never from the request. */
export type NewSession = Omit<CreateSessionInput, "creatorUsername">
export type HistoryRequest = Omit<HistoryInput, "username">
export type ReadPosition = Omit<ReadPositionInput, "username">
export type InboxRequest = Omit<InboxInput, "username">

export interface SessionsShape {
  /** The caller behind a bearer token: every other method takes one. */
  readonly authenticate: (token: string | undefined) => Effect.Effect<Principal, AuthError>
  readonly list: (caller: Principal, page: PageRequest) => Effect.Effect<SessionPage, LogicError>
  /** The id of the new session (or of the existing direct one). */
  readonly create: (caller: Principal, request: NewSession) => Effect.Effect<string, LogicError>
  readonly history: (caller: Principal, request: HistoryRequest) => Effect.Effect<ReadonlyArray<PushMessage>, LogicError>
  readonly contacts: (caller: Principal) => Effect.Effect<ReadonlyArray<ContactInfo>, LogicError>
  readonly searchUsers: (caller: Principal, query: string) => Effect.Effect<ReadonlyArray<ContactInfo>, LogicError>
  /** The caller's unread count in the session after the update. */
  readonly markRead: (caller: Principal, request: ReadPosition) => Effect.Effect<bigint, LogicError>
  readonly inbox: (caller: Principal, request: InboxRequest) => Effect.Effect<InboxPage, LogicError>
}

const INT64_MAX = (1n << 63n) - 1n

/** The first rule a request breaks, as a client-facing message (fields by their wire names). */
type Problem = string | undefined

const required = (field: string, value: string): Problem => value.trim() === "" ? `${field} must not be empty` : undefined

const count = (field: string, value: bigint): Problem =>
  value >= 0n && value <= INT64_MAX ? undefined : `${field} must be between 0 and ${INT64_MAX}`

const PAGE_TOKEN_MAX = 512

/** Refused before Logic is asked, with the first broken rule; else the call. */
const checked = <A>(problems: ReadonlyArray<Problem>, call: () => Effect.Effect<A, LogicError>): Effect.Effect<A, LogicError> => {
  for (const problem of problems) if (problem !== undefined) return Effect.fail(logicError("invalid_argument", problem))
  return call()
}

const sessionProblem = (request: NewSession): Problem => {
  if (!isRequestedSessionType(request.type)) return "type must be 1 (direct), 2 (group) or 3 (system)"
  if (request.members.some((member) => member.trim() === "")) return "members must not contain an empty username"
  return missingMembersProblem(request.type, request.members)
}

/** The SessionService of the API for an authenticated caller, whatever transport serves it. */
export class Sessions extends Context.Tag("resonance/Sessions")<Sessions, SessionsShape>() {
  static readonly layer = (rules: SessionRules = defaultSessionRules): Layer.Layer<Sessions, never, Logic | Authenticator> =>
    Layer.effect(
      Sessions,
      Effect.gen(function*() {
        const logic = yield* Logic
        const authenticator = yield* Authenticator
        return {
          authenticate: authenticator.authenticate,
          list: (caller, page) =>
            checked([
              count("limit", page.limit),
              page.pageToken.length > PAGE_TOKEN_MAX ? "page_token is not one this gateway gave out" : undefined
            ], () => logic.getSessionList(caller.username, page)),
          create: (caller, request) =>
            checked([sessionProblem(request)], () => {
              const plan = planSession({ creator: caller.username, ...request }, rules)
              if (plan._tag === "Invalid") return Effect.fail(logicError("invalid_argument", plan.message))
              // The resolved type goes to Logic, so one that cannot infer it is told.
              return logic.createSession({ creatorUsername: caller.username, members: request.members, name: request.name, type: plan.type })
            }),
          history: (caller, request) =>
            checked(
              [required("session_id", request.sessionId), count("limit", request.limit), count("before_seq", request.beforeSeq)],
              () => logic.getHistoryMessages({ username: caller.username, ...request })
            ),
          contacts: (caller) => logic.getContactList(caller.username),
          searchUsers: (_caller, query) => checked([required("query", query)], () => logic.searchUser(query)),
          markRead: (caller, request) =>
            checked(
              [required("session_id", request.sessionId), count("seq_id", request.seqId)],
              () => logic.updateReadPosition({ username: caller.username, ...request })
            ),
          inbox: (caller, request) =>
            checked(
              [count("cursor_id", request.cursorId), count("limit", request.limit)],
              () => logic.pullInboxDelta({ username: caller.username, ...request })
            )
        }
      })
    )
}
