import { Effect } from "effect"
import type { AccountsShape } from "../../application/Accounts.js"
import type { Principal } from "../../application/Authenticator.js"
import type { LoginRefused } from "../../application/LoginGuard.js"
import type { SessionsShape } from "../../application/Sessions.js"
import type { AuthError, LogicError } from "../../domain/Errors.js"
import * as Api from "../../gen/gateway/v1/api.js"

/** What a procedure can fail with: the use cases' typed errors. */
export type ProcedureError = LogicError | AuthError | LoginRefused

/** What a procedure is called with besides its message. */
export interface Call {
  /** The client's proxy-aware address, which the login policy counts failures under. */
  readonly address: string
  /** The token of the Authorization header, if any. */
  readonly headerToken: string | undefined
  /** Who calls a `bearer` procedure, authenticated before its message was read. */
  readonly caller: Principal | undefined
  /** Names the user a public procedure turned out to act for (a logout), for the access log. */
  readonly identify: (username: string) => void
}

/**
 * Who may call: `public` needs nothing up front (Logout authenticates the token it is given),
 * `bearer` needs the Authorization header, checked before the message is read.
 */
export type Access = "public" | "bearer"

/** A unary procedure with its types erased, so one table drives the Connect and REST routes. */
export interface Procedure {
  readonly service: "AuthService" | "SessionService"
  readonly method: string
  /** The Connect path, also the key of its rate limit whatever path the request came by. */
  readonly path: string
  readonly access: Access
  /** `ip`: a login or registration, which costs a password hash; `user`: a SessionService call. */
  readonly limitedBy: "ip" | "user" | undefined
  /** Its int64 fields by JSON name, checked before decoding. */
  readonly int64Fields: ReadonlyArray<string>
  readonly fromJson: (object: Record<string, unknown>) => unknown
  readonly fromBinary: (bytes: Uint8Array) => unknown
  readonly invoke: (request: unknown, call: Call) => Effect.Effect<unknown, ProcedureError>
  readonly toJson: (response: unknown) => unknown
  readonly toBinary: (response: unknown) => Uint8Array
}

interface ProcedureSpec<Req, Res> {
  readonly service: Procedure["service"]
  readonly method: string
  readonly access: Access
  readonly limitedBy?: "ip" | "user"
  readonly int64Fields?: ReadonlyArray<string>
  readonly request: Api.MessageFns<Req>
  readonly response: Api.MessageFns<Res>
  readonly invoke: (request: Req, call: Call) => Effect.Effect<Res, ProcedureError>
}

const define = <Req, Res>(spec: ProcedureSpec<Req, Res>): Procedure => ({
  service: spec.service,
  method: spec.method,
  path: `/resonance.gateway.v1.${spec.service}/${spec.method}`,
  access: spec.access,
  limitedBy: spec.limitedBy,
  int64Fields: spec.int64Fields ?? [],
  fromJson: (object) => spec.request.fromJSON(object),
  fromBinary: (bytes) => spec.request.decode(bytes),
  invoke: (request, call) => spec.invoke(request as Req, call),
  toJson: (response) => spec.response.toJSON(response as Res),
  toBinary: (response) => spec.response.encode(response as Res).finish()
})

/** A SessionService procedure: every one needs the Authorization header and is limited per user. */
const sessionProcedure = <Req, Res>(
  spec: Omit<ProcedureSpec<Req, Res>, "service" | "access" | "limitedBy" | "invoke"> & {
    readonly invoke: (request: Req, caller: Principal) => Effect.Effect<Res, ProcedureError>
  }
): Procedure =>
  define({
    ...spec,
    service: "SessionService",
    access: "bearer",
    limitedBy: "user",
    // A bearer procedure is only called once its caller is known.
    invoke: (request, call) => spec.invoke(request, call.caller!)
  })

/** Every procedure of the HTTP API: the wire messages mapped onto the use cases, and back. */
export const makeProcedures = (accounts: AccountsShape, sessions: SessionsShape): ReadonlyArray<Procedure> => [
  define({
    service: "AuthService",
    method: "Login",
    access: "public",
    limitedBy: "ip",
    request: Api.LoginRequest,
    response: Api.LoginResponse,
    invoke: (request, call) => accounts.login({ username: request.username, password: request.password }, call.address)
  }),
  define({
    service: "AuthService",
    method: "Register",
    access: "public",
    limitedBy: "ip",
    request: Api.RegisterRequest,
    response: Api.RegisterResponse,
    invoke: (request) =>
      accounts.register({ username: request.username, password: request.password, nickname: request.nickname })
  }),
  define({
    service: "AuthService",
    method: "Logout",
    access: "public",
    request: Api.LogoutRequest,
    response: Api.LogoutResponse,
    invoke: (request, call) =>
      Effect.map(accounts.logout(request.accessToken || call.headerToken), (principal) => {
        call.identify(principal.username)
        return { success: true }
      })
  }),
  sessionProcedure({
    method: "GetSessionList",
    int64Fields: ["limit"],
    request: Api.GetSessionListRequest,
    response: Api.GetSessionListResponse,
    invoke: (request, caller) =>
      Effect.map(
        sessions.list(caller, { limit: request.limit, pageToken: request.pageToken }),
        (page) => ({ sessions: [...page.sessions], nextPageToken: page.nextPageToken })
      )
  }),
  sessionProcedure({
    method: "CreateSession",
    request: Api.CreateSessionRequest,
    response: Api.CreateSessionResponse,
    invoke: (request, caller) =>
      Effect.map(
        sessions.create(caller, { members: request.members, name: request.name, type: request.type }),
        (sessionId) => ({ sessionId })
      )
  }),
  sessionProcedure({
    method: "GetHistoryMessages",
    int64Fields: ["limit", "beforeSeq"],
    request: Api.GetHistoryMessagesRequest,
    response: Api.GetHistoryMessagesResponse,
    invoke: (request, caller) =>
      Effect.map(
        sessions.history(caller, { sessionId: request.sessionId, limit: request.limit, beforeSeq: request.beforeSeq }),
        (messages) => ({ messages: [...messages] })
      )
  }),
  sessionProcedure({
    method: "GetContactList",
    request: Api.GetContactListRequest,
    response: Api.GetContactListResponse,
    invoke: (_, caller) => Effect.map(sessions.contacts(caller), (contacts) => ({ contacts: [...contacts] }))
  }),
  sessionProcedure({
    method: "SearchUser",
    request: Api.SearchUserRequest,
    response: Api.SearchUserResponse,
    invoke: (request, caller) => Effect.map(sessions.searchUsers(caller, request.query), (users) => ({ users: [...users] }))
  }),
  sessionProcedure({
    method: "UpdateReadPosition",
    int64Fields: ["seqId"],
    request: Api.UpdateReadPositionRequest,
    response: Api.UpdateReadPositionResponse,
    invoke: (request, caller) =>
      Effect.map(
        sessions.markRead(caller, { sessionId: request.sessionId, seqId: request.seqId }),
        (unreadCount) => ({ unreadCount })
      )
  }),
  sessionProcedure({
    method: "PullInboxDelta",
    int64Fields: ["cursorId", "limit"],
    request: Api.PullInboxDeltaRequest,
    response: Api.PullInboxDeltaResponse,
    invoke: (request, caller) =>
      Effect.map(
        sessions.inbox(caller, { cursorId: request.cursorId, limit: request.limit }),
        (page) => ({ ...page, events: [...page.events] })
      )
  })
]

/** How a request carries its message: a Connect call, or a REST twin with a JSON body or a query. */
export type Transport = "connect" | "rest-body" | "rest-query"

/** The REST paths of the gateway's README, mapped onto the procedures (by method name). */
export const restRoutes: ReadonlyArray<readonly ["GET" | "POST", `/${string}`, string, Transport]> = [
  ["POST", "/api/v1/auth/login", "Login", "rest-body"],
  ["POST", "/api/v1/auth/register", "Register", "rest-body"],
  ["POST", "/api/v1/auth/logout", "Logout", "rest-body"],
  ["GET", "/api/v1/session/list", "GetSessionList", "rest-query"],
  ["POST", "/api/v1/session/create", "CreateSession", "rest-body"],
  ["GET", "/api/v1/session/messages", "GetHistoryMessages", "rest-query"],
  ["GET", "/api/v1/session/search", "SearchUser", "rest-query"],
  ["GET", "/api/v1/session/contacts", "GetContactList", "rest-query"],
  ["POST", "/api/v1/session/read", "UpdateReadPosition", "rest-body"],
  ["GET", "/api/v1/session/inbox", "PullInboxDelta", "rest-query"]
]
