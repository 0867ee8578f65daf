import { Cause, Duration, Effect, Either, Exit } from "effect"
import type { Fiber } from "effect"
import type { LogicError } from "../../domain/Errors.js"
import type { SendMessageResult } from "../../domain/Model.js"
import type { LiveConnection } from "../ports/LiveConnection.js"
import type { ChatItem, LogicShape } from "../ports/Logic.js"
import type { Session } from "./Session.js"

/** A chat's failure as the Dispatcher answers it. */
export type ChatFailure = Pick<LogicError, "code" | "message">

/** Failures that are Logic's, not the client's: worth a warning. */
export const isOutage = (code: string) => code === "unavailable" || code === "deadline_exceeded" || code === "internal"

export const logicTimedOut: ChatFailure = { code: "deadline_exceeded", message: "logic did not answer in time" }

/** A call to Logic failed with `logicTimedOut` past the chat timeout (none when it is zero). */
export const withinChatTimeout = <A, E>(call: Effect.Effect<A, E>, chatTimeout: Duration.Duration): Effect.Effect<A, E | ChatFailure> =>
  Duration.isZero(chatTimeout) ? call : Effect.timeoutFail(call, { duration: chatTimeout, onTimeout: () => logicTimedOut })
const internalError: ChatFailure = { code: "internal", message: "internal error" }
const unanswered = Either.left(internalError)

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

/** A chat waiting for Logic: what Logic needs (a ChatItem), and who to answer. */
export interface PendingChat extends ChatItem {
  readonly session: Session
  readonly seq: string
}

type RunFork = <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
type Results = ReadonlyArray<Either.Either<SendMessageResult, ChatFailure>>

/**
 * The chat path's one batching stage. A Logic that commits chats together (`batchesChats`) gets
 * the chats of one turn of the event loop in one call; an in-process one with `sendMessagesNow`
 * takes them plainly, so per batch no Effect runs either (a timer only when a chat timeout is
 * set), otherwise one fiber runs the call. A Logic over the network gets each chat in its own call
 * at once, so a slow one holds no other's ack back (each RPC has its own deadline; a batch would
 * be answered with its slowest). Every chat is acked when its call ends, then its connection goes
 * on; what timed out or died unanswered is acked with an error.
 */
export const makeChatBatcher = (
  logic: LogicShape,
  chatTimeout: Duration.Duration,
  runFork: RunFork
): (chat: PendingChat) => void => {
  const sendMessagesNow = logic.batchesChats ? logic.sendMessagesNow : undefined
  const send = sendMessagesNow === undefined
    ? (chats: ReadonlyArray<PendingChat>) => {
      runFork(withinChatTimeout(logic.sendMessages(chats), chatTimeout)).addObserver((exit) =>
        answerAll(
          chats,
          Exit.isSuccess(exit) ? exit.value : undefined,
          // A call that timed out answers every chat with its error; one that died (a bug) with "internal".
          Exit.isFailure(exit) && Cause.isFailType(exit.cause) ? Either.left(exit.cause.error) : unanswered,
          runFork
        )
      )
    }
    : sendPlainly(sendMessagesNow, Duration.toMillis(chatTimeout), runFork)
  if (!logic.batchesChats) return (chat) => send([chat])
  let batch: Array<PendingChat> = []
  const sendBatch = () => {
    const chats = batch
    batch = []
    send(chats)
  }
  return (chat) => {
    if (batch.length === 0) setImmediate(sendBatch)
    batch.push(chat)
  }
}

const timedOut = Either.left(logicTimedOut)
const MAX_TIMER_MS = 2 ** 31 - 1

/** A batch through `sendMessagesNow`: answered once, by Logic or by the timeout, whichever is first. */
const sendPlainly = (
  sendMessagesNow: NonNullable<LogicShape["sendMessagesNow"]>,
  timeoutMs: number,
  runFork: RunFork
) =>
(chats: ReadonlyArray<PendingChat>): void => {
  let done = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const finish = (results: Results | undefined, missing: Either.Either<never, ChatFailure>) => {
    if (done) return
    done = true
    if (timer !== undefined) clearTimeout(timer)
    answerAll(chats, results, missing, runFork)
  }
  // Past setTimeout's range (~24.8 days) Node would fire at once: such a timeout means none.
  if (timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS) timer = setTimeout(() => finish(undefined, timedOut), timeoutMs)
  try {
    sendMessagesNow(chats, (results) => finish(results, unanswered))
  } catch (error) {
    // A bug in Logic: its chats are answered "internal" and the connections go on.
    finish(undefined, unanswered)
    runFork(Effect.logError("sending chats to Logic failed", Cause.die(error)))
  }
}

/**
 * Acks each chat with its result (`missing` for a chat without one), then lets its connection go
 * on. Runs in timer and I/O callbacks: what one chat's answer throws (a bug) is logged once and
 * keeps neither the other chats unanswered nor the exception loose in the event loop.
 */
const answerAll = (
  chats: ReadonlyArray<PendingChat>,
  results: Results | undefined,
  missing: Either.Either<never, ChatFailure>,
  runFork: RunFork
) => {
  let failure: ChatFailure | undefined
  let failed: Array<LiveConnection> | undefined
  let thrown: unknown = undefined
  for (let i = 0; i < chats.length; i++) {
    const { chat, seq, session } = chats[i]!
    try {
      const outcome = session.answer(seq, chat, results?.[i] ?? missing)
      if (outcome !== undefined) {
        failure ??= outcome
        ;(failed ??= []).push(session.connection)
      }
    } catch (error) {
      thrown ??= error
    }
    try {
      session.settled()
    } catch (error) {
      thrown ??= error
    }
  }
  if (failure !== undefined) runFork(logOutage(failed!, failure))
  if (thrown !== undefined) runFork(Effect.logError("answering chats failed", Cause.die(thrown)))
}
