import { Effect, Either, ParseResult, Schema } from "effect"
import type { AuthenticatorShape } from "../../application/Authenticator.js"
import type { LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { failureCodeOfAuth, logicError } from "../../domain/Errors.js"
import type { SessionRules } from "../../domain/Session.js"
import { isRequestedSessionType, missingMembersProblem, planSession } from "../../domain/Session.js"
import * as Api from "../../gen/gateway/v1/api.js"

/** The authenticated caller of a procedure. */
export interface Caller {
  readonly username: string
  readonly token: string
}

/**
 * Who may call: `public` needs nothing, `bearer` needs the Authorization header, `token` takes the
 * token from the request body (falling back to the header) once it is decoded.
 */
export type Access = "public" | "bearer" | "token"

/** A unary procedure with its types erased, so one table drives the Connect and REST routes. */
export interface Procedure {
  readonly service: "AuthService" | "SessionService"
  readonly method: string
  /** The Connect path, also the key of its rate limit whatever path the request came by. */
  readonly path: string
  readonly access: Access
  readonly limitedBy: "ip" | "user" | undefined
  /** The key failed attempts are counted under (a login's username), when they are. */
  readonly failuresKey: ((request: unknown) => string) | undefined
  /** Its int64 fields by JSON name, checked before decoding. */
  readonly int64Fields: ReadonlyArray<string>
  readonly fromJson: (object: Record<string, unknown>) => unknown
  readonly fromBinary: (bytes: Uint8Array) => unknown
  /** The first rule the request breaks, as a client-facing message. */
  readonly validate: (request: unknown) => string | undefined
  readonly bodyToken: (request: unknown) => string
  readonly invoke: (request: unknown, caller: Caller | undefined) => Effect.Effect<unknown, LogicError>
  readonly toJson: (response: unknown) => unknown
  readonly toBinary: (response: unknown) => Uint8Array
}

interface ProcedureSpec<Req, Res> {
  readonly service: Procedure["service"]
  readonly method: string
  readonly access: Access
  readonly limitedBy?: "ip" | "user"
  readonly failuresKey?: (request: Req) => string
  readonly int64Fields?: ReadonlyArray<string>
  readonly request: Api.MessageFns<Req>
  readonly response: Api.MessageFns<Res>
  readonly schema?: Schema.Schema<any, any>
  readonly bodyToken?: (request: Req) => string
  readonly invoke: (request: Req, caller: Caller) => Effect.Effect<Res, LogicError>
}

const firstIssue = (schema: Schema.Schema<any, any>) => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "first" })
  return (request: unknown): string | undefined => {
    const result = decode(request)
    if (Either.isRight(result)) return undefined
    const issue = ParseResult.ArrayFormatter.formatErrorSync(result.left)[0]
    return issue === undefined ? "invalid request" : issue.message
  }
}

const define = <Req, Res>(spec: ProcedureSpec<Req, Res>): Procedure => ({
  service: spec.service,
  method: spec.method,
  path: `/resonance.gateway.v1.${spec.service}/${spec.method}`,
  access: spec.access,
  limitedBy: spec.limitedBy,
  failuresKey: spec.failuresKey === undefined ? undefined : (request) => spec.failuresKey!(request as Req),
  int64Fields: spec.int64Fields ?? [],
  fromJson: (object) => spec.request.fromJSON(object),
  fromBinary: (bytes) => spec.request.decode(bytes),
  validate: spec.schema === undefined ? () => undefined : firstIssue(spec.schema),
  bodyToken: (request) => spec.bodyToken?.(request as Req) ?? "",
  // Public procedures get no caller; they never read it.
  invoke: (request, caller) => spec.invoke(request as Req, caller as Caller),
  toJson: (response) => spec.response.toJSON(response as Res),
  toBinary: (response) => spec.response.encode(response as Res).finish()
})

/** A SessionService procedure: every one needs the Authorization header and is limited per user. */
const sessionProcedure = <Req, Res>(
  spec: Omit<ProcedureSpec<Req, Res>, "service" | "access" | "limitedBy">
): Procedure => define({ ...spec, service: "SessionService", access: "bearer", limitedBy: "user" })

const INT64_MAX = (1n << 63n) - 1n

const nonEmpty = (field: string) =>
  Schema.String.pipe(Schema.filter((value) => value.trim() !== "", { message: () => `${field} must not be empty` }))

const nonNegativeInt64 = (field: string) =>
  Schema.BigIntFromSelf.pipe(
    Schema.filter((value) => value >= 0n && value <= INT64_MAX, {
      message: () => `${field} must be between 0 and ${INT64_MAX}`
    })
  )

const LoginSchema = Schema.Struct({
  username: nonEmpty("username"),
  password: Schema.String.pipe(Schema.filter((value) => value !== "", { message: () => "password must not be empty" }))
})

const RegisterSchema = Schema.Struct({
  username: nonEmpty("username"),
  password: Schema.String.pipe(
    Schema.filter((value) => value.length >= 6, { message: () => "password must be at least 6 characters" })
  ),
  nickname: Schema.String
})

const CreateSessionSchema = Schema.Struct({
  type: Schema.Number.pipe(
    // 0 (left out) is inferred from the members: one other user is a direct session.
    Schema.filter(isRequestedSessionType, {
      message: () => "type must be 1 (direct), 2 (group) or 3 (system)"
    })
  ),
  members: Schema.Array(Schema.String).pipe(
    Schema.filter((members) => members.every((member) => member.trim() !== ""), {
      message: () => "members must not contain an empty username"
    })
  ),
  name: Schema.String
}).pipe(
  Schema.filter((request) => missingMembersProblem(request.type, request.members) ?? true)
)

const HistorySchema = Schema.Struct({
  sessionId: nonEmpty("session_id"),
  limit: nonNegativeInt64("limit"),
  beforeSeq: nonNegativeInt64("before_seq")
})

const SearchSchema = Schema.Struct({ query: nonEmpty("query") })

const SessionListSchema = Schema.Struct({
  limit: nonNegativeInt64("limit"),
  pageToken: Schema.String.pipe(Schema.maxLength(512, { message: () => "page_token is not one this gateway gave out" }))
})

const ReadPositionSchema = Schema.Struct({
  sessionId: nonEmpty("session_id"),
  seqId: nonNegativeInt64("seq_id")
})

const InboxSchema = Schema.Struct({
  cursorId: nonNegativeInt64("cursor_id"),
  limit: nonNegativeInt64("limit")
})

/** A SessionService request as Logic takes it: its fields for the authenticated caller, without the token. */
const asCaller = <Req extends { readonly accessToken: string }>(request: Req, caller: Caller): Omit<Req, "accessToken"> & { readonly username: string } => {
  const { accessToken: _token, ...fields } = request
  return { ...fields, username: caller.username }
}

/** Every procedure of the HTTP API, bound to the Logic and the Authenticator. */
export interface ProcedureRules {
  readonly sessions: SessionRules
}

export const makeProcedures = (
  logic: LogicShape,
  authenticator: AuthenticatorShape,
  rules: ProcedureRules
): ReadonlyArray<Procedure> => [
  define({
    service: "AuthService",
    method: "Login",
    access: "public",
    limitedBy: "ip",
    // Guessing one user's password from many addresses runs into this, not the per-address limit.
    failuresKey: (request) => request.username.trim().toLowerCase(),
    request: Api.LoginRequest,
    response: Api.LoginResponse,
    schema: LoginSchema,
    invoke: (request) => logic.login({ username: request.username, password: request.password })
  }),
  define({
    service: "AuthService",
    method: "Register",
    access: "public",
    limitedBy: "ip",
    request: Api.RegisterRequest,
    response: Api.RegisterResponse,
    schema: RegisterSchema,
    invoke: (request) =>
      logic.register({
        username: request.username,
        password: request.password,
        nickname: request.nickname
      })
  }),
  define({
    service: "AuthService",
    method: "Logout",
    access: "token",
    request: Api.LogoutRequest,
    response: Api.LogoutResponse,
    bodyToken: (request) => request.accessToken,
    invoke: (_, caller) =>
      authenticator.revoke(caller.token).pipe(
        Effect.as({ success: true }),
        Effect.mapError((error) => logicError(failureCodeOfAuth(error), error.message))
      )
  }),
  sessionProcedure({
    method: "GetSessionList",
    int64Fields: ["limit"],
    request: Api.GetSessionListRequest,
    response: Api.GetSessionListResponse,
    schema: SessionListSchema,
    invoke: (request, caller) =>
      Effect.map(
        logic.getSessionList(caller.username, { limit: request.limit, pageToken: request.pageToken }),
        (page) => ({ sessions: [...page.sessions], nextPageToken: page.nextPageToken })
      )
  }),
  sessionProcedure({
    method: "CreateSession",
    request: Api.CreateSessionRequest,
    response: Api.CreateSessionResponse,
    schema: CreateSessionSchema,
    invoke: (request, caller) => {
      const plan = planSession(
        { creator: caller.username, members: request.members, name: request.name, type: request.type },
        rules.sessions
      )
      if (plan._tag === "Invalid") return Effect.fail(logicError("invalid_argument", plan.message))
      // The resolved type goes to Logic, so one that cannot infer it is told.
      return Effect.map(
        logic.createSession({ creatorUsername: caller.username, members: request.members, name: request.name, type: plan.type }),
        (sessionId) => ({ sessionId })
      )
    }
  }),
  sessionProcedure({
    method: "GetHistoryMessages",
    int64Fields: ["limit", "beforeSeq"],
    request: Api.GetHistoryMessagesRequest,
    response: Api.GetHistoryMessagesResponse,
    schema: HistorySchema,
    invoke: (request, caller) =>
      Effect.map(logic.getHistoryMessages(asCaller(request, caller)), (messages) => ({ messages: [...messages] }))
  }),
  sessionProcedure({
    method: "GetContactList",
    request: Api.GetContactListRequest,
    response: Api.GetContactListResponse,
    invoke: (_, caller) =>
      Effect.map(logic.getContactList(caller.username), (contacts) => ({ contacts: [...contacts] }))
  }),
  sessionProcedure({
    method: "SearchUser",
    request: Api.SearchUserRequest,
    response: Api.SearchUserResponse,
    schema: SearchSchema,
    invoke: (request) => Effect.map(logic.searchUser(request.query), (users) => ({ users: [...users] }))
  }),
  sessionProcedure({
    method: "UpdateReadPosition",
    int64Fields: ["seqId"],
    request: Api.UpdateReadPositionRequest,
    response: Api.UpdateReadPositionResponse,
    schema: ReadPositionSchema,
    invoke: (request, caller) =>
      Effect.map(logic.updateReadPosition(asCaller(request, caller)), (unreadCount) => ({ unreadCount }))
  }),
  sessionProcedure({
    method: "PullInboxDelta",
    int64Fields: ["cursorId", "limit"],
    request: Api.PullInboxDeltaRequest,
    response: Api.PullInboxDeltaResponse,
    schema: InboxSchema,
    invoke: (request, caller) =>
      Effect.map(logic.pullInboxDelta(asCaller(request, caller)), (page) => ({ ...page, events: [...page.events] }))
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
