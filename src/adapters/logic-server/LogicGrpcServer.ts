import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { Scope } from "effect"
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
import { InternalAuth } from "../grpc/Security.js"
import { listen, makeUnaryBridge } from "../grpc/Server.js"
import type { ListenOptions } from "../grpc/Server.js"
import { grpcFailure, statusOf } from "../grpc/Status.js"

export type LogicServerOptions = ListenOptions

const toStatus = (error: LogicError) => grpcFailure(statusOf(error.code), error.message)

/**
 * Serves any Logic implementation as the `resonance.logic.v1` services, so the gateway's gRPC
 * adapter (or another gateway) can use it. Succeeds with the bound port; stops with the scope.
 */
export const serveLogic = (
  logic: LogicShape,
  options: LogicServerOptions
): Effect.Effect<{ readonly port: number }, Error, Scope.Scope | InternalAuth> =>
  Effect.gen(function*() {
    const security = yield* InternalAuth
    const bridge = yield* makeUnaryBridge(security)
    const server = new grpc.Server()

    const auth: AuthServiceServer = {
      login: bridge(AuthServiceService.login, (request) => Effect.mapError(logic.login(request), toStatus)),
      register: bridge(AuthServiceService.register, (request) => Effect.mapError(logic.register(request), toStatus)),
      validateToken: bridge(AuthServiceService.validateToken, (request) =>
        logic.validateToken(request.accessToken).pipe(
          Effect.map((user) => ({ valid: true, user, username: user.username })),
          Effect.catchIf(
            (error) => error.code === "unauthenticated",
            () => Effect.succeed({ valid: false, user: undefined, username: "" })
          ),
          Effect.mapError(toStatus)
        )),
      revokeToken: bridge(AuthServiceService.revokeToken, (request) =>
        logic.revokeToken(request.accessToken).pipe(
          Effect.map((revocation) => ({ revocation })),
          Effect.mapError(toStatus)
        )),
      listRevocations: bridge(AuthServiceService.listRevocations, (request) =>
        logic.listRevocations(request.afterCursor, request.limit).pipe(
          Effect.map((page) => ({ revocations: page.revocations as Array<Revocation>, nextCursor: page.nextCursor })),
          Effect.mapError(toStatus)
        ))
    }

    const chat: ChatServiceServer = {
      sendMessage: bridge(ChatServiceService.sendMessage, (request) =>
        logic.sendMessage(request, request.idempotencyKey === "" ? undefined : { idempotencyKey: request.idempotencyKey }).pipe(
          Effect.map((result) => ({ msgId: result.msgId, seqId: result.seqId, error: "" })),
          Effect.catchIf(isSendRefusal, (error) => Effect.succeed({ msgId: 0n, seqId: 0n, error: error.message })),
          Effect.mapError(toStatus)
        ))
    }

    const presence: PresenceServiceServer = {
      syncStatus: bridge(PresenceServiceService.syncStatus, (request) =>
        logic.syncStatus(request).pipe(
          Effect.as({ seqId: request.seqId, error: "" }),
          Effect.mapError(toStatus)
        ))
    }

    const session: SessionServiceServer = {
      getSessionList: bridge(SessionServiceService.getSessionList, (request) =>
        logic.getSessionList(request.username, { limit: request.limit, pageToken: request.pageToken }).pipe(
          Effect.map((page) => ({ sessions: page.sessions as Array<SessionInfo>, nextPageToken: page.nextPageToken })),
          Effect.mapError(toStatus)
        )),
      createSession: bridge(SessionServiceService.createSession, (request) =>
        logic.createSession(request).pipe(
          Effect.map((sessionId) => ({ sessionId })),
          Effect.mapError(toStatus)
        )),
      getHistoryMessages: bridge(SessionServiceService.getHistoryMessages, (request) =>
        logic.getHistoryMessages(request).pipe(
          Effect.map((messages) => ({ messages: messages as Array<PushMessage> })),
          Effect.mapError(toStatus)
        )),
      getContactList: bridge(SessionServiceService.getContactList, (request) =>
        logic.getContactList(request.username).pipe(
          Effect.map((contacts) => ({ contacts: contacts as Array<ContactInfo> })),
          Effect.mapError(toStatus)
        )),
      searchUser: bridge(SessionServiceService.searchUser, (request) =>
        logic.searchUser(request.query).pipe(
          Effect.map((users) => ({ users: users as Array<ContactInfo> })),
          Effect.mapError(toStatus)
        )),
      updateReadPosition: bridge(SessionServiceService.updateReadPosition, (request) =>
        logic.updateReadPosition(request).pipe(
          Effect.map((unreadCount) => ({ unreadCount })),
          Effect.mapError(toStatus)
        )),
      pullInboxDelta: bridge(SessionServiceService.pullInboxDelta, (request) =>
        logic.pullInboxDelta(request).pipe(
          Effect.map((page) => ({
            events: page.events as Array<InboxEvent>,
            nextCursorId: page.nextCursorId,
            hasMore: page.hasMore
          })),
          Effect.mapError(toStatus)
        ))
    }

    server.addService(AuthServiceService, auth)
    server.addService(ChatServiceService, chat)
    server.addService(PresenceServiceService, presence)
    server.addService(SessionServiceService, session)
    const port = yield* listen(server, security, options)
    yield* Effect.logDebug("logic gRPC server listening").pipe(Effect.annotateLogs({ port }))
    return { port }
  })
