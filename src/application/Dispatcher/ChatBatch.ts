import { Cause, Duration, Effect, Either, Exit } from "effect"
import type { Fiber } from "effect"
import type { LogicError } from "../../domain/Errors.js"
import type { SendMessageResult } from "../../domain/Model.js"
import type { LiveConnection } from "../ConnectionHub.js"
import type { ChatItem, LogicShape } from "../ports/Logic.js"
import type { Session } from "./Session.js"

/** A chat's failure as the Dispatcher answers it. */
export type ChatFailure = Pick<LogicError, "code" | "message">

/** Failures that are Logic's, not the client's: worth a warning. */
export const isOutage = (code: string) => code === "unavailable" || code === "deadline_exceeded" || code === "internal"

export const logicTimedOut: ChatFailure = { code: "deadline_exceeded", message: "logic did not answer in time" }
const internalError: ChatFailure = { code: "internal", message: "internal error" }

/**
 * A chat Logic failed to store, said once for its batch with whom it concerned. No log
 * annotations around the calls themselves: they cost ~11 KB of garbage per chat.
 */
export const logOutage = (connections: ReadonlyArray<LiveConnection>, error: ChatFailure) =>
  Effect.logWarning("chats not stored: Logic failed").pipe(
    Effect.annotateLogs({
      code: error.code,
      error: error.message,
      chats: connections.length,
      user: connections[0]?.info.username ?? "",
      connection: connections[0]?.info.id ?? 0
    })
  )

/** A chat waiting for its batch: what Logic needs (a ChatItem), and who to answer. */
export interface PendingChat extends ChatItem {
  readonly session: Session
  readonly seq: string
}

/**
 * Collects the chats of one turn and sends them to Logic as one batch, in one fiber: per frame no
 * Effect runs. Each chat is acked the moment its result is known, then its connection goes on;
 * what timed out, failed or died unanswered is acked with an error.
 */
export const makeChatBatcher = (
  logic: LogicShape,
  chatTimeout: Duration.Duration,
  runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
): (chat: PendingChat) => void => {
  let batch: Array<PendingChat> = []
  const sendBatch = () => {
    const chats = batch
    batch = []
    const answered = new Array<boolean>(chats.length).fill(false)
    let failure: ChatFailure | undefined
    const failed: Array<LiveConnection> = []
    const answer = (i: number, result: Either.Either<SendMessageResult, ChatFailure>) => {
      if (answered[i]) return
      answered[i] = true
      const { session, seq, chat } = chats[i]!
      const outcome = session.answer(seq, chat, result)
      if (outcome !== undefined) {
        failure ??= outcome
        failed.push(session.connection)
      }
      session.settled()
    }
    const call = logic.sendMessages(chats, answer)
    const bounded = Duration.isZero(chatTimeout) ? call : Effect.timeout(call, chatTimeout)
    runFork(bounded).addObserver((exit) => {
      const missing = Exit.isSuccess(exit) ? undefined : Either.left(Cause.isFailType(exit.cause) ? logicTimedOut : internalError)
      if (missing !== undefined) for (let i = 0; i < chats.length; i++) answer(i, missing)
      if (failure !== undefined) runFork(logOutage(failed, failure))
    })
  }
  return (chat) => {
    if (batch.length === 0) setImmediate(sendBatch)
    batch.push(chat)
  }
}
