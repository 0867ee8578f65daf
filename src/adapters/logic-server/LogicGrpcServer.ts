import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { ConfigError, Scope } from "effect"
import type { LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { isSendRefusal } from "../../domain/Errors.js"
import { AuthServiceService } from "../../gen/logic/v1/auth.js"
import type { AuthServiceServer, Revocation } from "../../gen/logic/v1/auth.js"
import { ChatServiceService } from "../../gen/logic/v1/chat.js"
import type { ChatServiceServer } from "../../gen/logic/v1/chat.js"
import { PresenceServiceService } from "../../gen/logic/v1/presence.js"
import type { PresenceServiceServer } from "../../gen/logic/v1/presence.js"
import { SessionServiceService } from "../../gen/logic/v1/session.js"
import type { ContactInfo, InboxEvent, SessionInfo, SessionServiceServer } from "../../gen/logic/v1/session.js"
import type { PushMessage } from "../../gen/gateway/v1/packet.js"
import * as InternalAuth from "../platform/grpc/Security.js"
import type { FrontDoor } from "../platform/net/FrontDoor.js"
import { internalListener, internalListenerSettings, listen, makeUnaryBridge, serverOptions } from "../platform/grpc/Server.js"
import type { UnaryMethod } from "../platform/grpc/Client.js"
import type { ListenOptions } from "../platform/grpc/Server.js"
import { grpcFailure, statusOf } from "../platform/grpc/Status.js"

export type LogicServerOptions = ListenOptions

const toStatus = (error: LogicError) => grpcFailure(statusOf(error.code), error.message)

/**
 * Serves any Logic implementation as the `resonance.logic.v1` services, so the gateway's gRPC
 * adapter (or another gateway) can use it. Succeeds with the bound port; stops with the scope.
 */
export const serveLogic = (
  logic: LogicShape,
  options: LogicServerOptions
): Effect.Effect<{ readonly port: number }, Error | ConfigError.ConfigError, Scope.Scope | InternalAuth.InternalAuth | FrontDoor> =>
  Effect.gen(function*() {
    const security = yield* InternalAuth.InternalAuth
    const listenerOptions = yield* internalListenerSettings
    const listener = yield* internalListener("logic", listenerOptions, true)
    const bridge = yield* makeUnaryBridge(security, undefined, listener.trustPeer)
    /** One RPC of the Logic: its answer, or its LogicError as the gRPC status the gateway maps back. */
    const serve = <Req, Res>(method: UnaryMethod<Req, Res>, call: (request: Req) => Effect.Effect<Res, LogicError>) =>
      bridge(method, (request: Req) => Effect.mapError(call(request), toStatus))
    const server = new grpc.Server(serverOptions(listenerOptions))

    const auth: AuthServiceServer = {
      login: serve(AuthServiceService.login, (request) => logic.login(request)),
      register: serve(AuthServiceService.register, (request) => logic.register(request)),
      validateToken: serve(AuthServiceService.validateToken, (request) =>
        logic.validateToken(request.accessToken).pipe(
          Effect.map((user) => ({ valid: true, user, username: user.username })),
          Effect.catchIf(
            (error) => error.code === "unauthenticated",
            () => Effect.succeed({ valid: false, user: undefined, username: "" })
          )
        )),
      revokeToken: serve(AuthServiceService.revokeToken, (request) =>
        logic.revokeToken(request.accessToken).pipe(
          Effect.map((revocation) => ({ revocation }))
        )),
      listRevocations: serve(AuthServiceService.listRevocations, (request) =>
        logic.listRevocations(request.afterCursor, request.limit).pipe(
          Effect.map((page) => ({ revocations: page.revocations as Array<Revocation>, nextCursor: page.nextCursor }))
        ))
    }

    const chat: ChatServiceServer = {
      sendMessage: serve(ChatServiceService.sendMessage, (request) =>
        logic.sendMessage(request, request.idempotencyKey === "" ? undefined : { idempotencyKey: request.idempotencyKey }).pipe(
          Effect.map((result) => ({ msgId: result.msgId, seqId: result.seqId, error: "" })),
          Effect.catchIf(isSendRefusal, (error) => Effect.succeed({ msgId: 0n, seqId: 0n, error: error.message }))
        ))
    }

    const presence: PresenceServiceServer = {
      syncStatus: serve(PresenceServiceService.syncStatus, (request) =>
        logic.syncStatus(request).pipe(
          Effect.as({ seqId: request.seqId, error: "" })
        ))
    }

    const session: SessionServiceServer = {
      getSessionList: serve(SessionServiceService.getSessionList, (request) =>
        logic.getSessionList(request.username, { limit: request.limit, pageToken: request.pageToken }).pipe(
          Effect.map((page) => ({ sessions: page.sessions as Array<SessionInfo>, nextPageToken: page.nextPageToken }))
        )),
      createSession: serve(SessionServiceService.createSession, (request) =>
        logic.createSession(request).pipe(
          Effect.map((sessionId) => ({ sessionId }))
        )),
      getHistoryMessages: serve(SessionServiceService.getHistoryMessages, (request) =>
        logic.getHistoryMessages(request).pipe(
          Effect.map((messages) => ({ messages: messages as Array<PushMessage> }))
        )),
      getContactList: serve(SessionServiceService.getContactList, (request) =>
        logic.getContactList(request.username).pipe(
          Effect.map((contacts) => ({ contacts: contacts as Array<ContactInfo> }))
        )),
      searchUser: serve(SessionServiceService.searchUser, (request) =>
        logic.searchUser(request.query).pipe(
          Effect.map((users) => ({ users: users as Array<ContactInfo> }))
        )),
      updateReadPosition: serve(SessionServiceService.updateReadPosition, (request) =>
        logic.updateReadPosition(request).pipe(
          Effect.map((unreadCount) => ({ unreadCount }))
        )),
      pullInboxDelta: serve(SessionServiceService.pullInboxDelta, (request) =>
        logic.pullInboxDelta(request).pipe(
          Effect.map((page) => ({
            events: page.events as Array<InboxEvent>,
            nextCursorId: page.nextCursorId,
            hasMore: page.hasMore
          }))
        ))
    }

    server.addService(AuthServiceService, auth)
    server.addService(ChatServiceService, chat)
    server.addService(PresenceServiceService, presence)
    server.addService(SessionServiceService, session)
    const port = yield* listen(server, security, options, listener)
    yield* Effect.logDebug("logic gRPC server listening").pipe(Effect.annotateLogs({ port }))
    return { port }
  })
