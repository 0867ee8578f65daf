import { Effect } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { CommittedShape } from "../../src/application/Committed.js"
import type { LogicError } from "../../src/domain/Errors.js"
import type { ChatRequest, PushMessage } from "../../src/domain/Model.js"
import type { EmbeddedLogic, LogicEmbeddedOptions } from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import { makeEmbeddedLogic } from "../../src/adapters/logic-embedded/LogicEmbedded.js"

export const SECRET = "test-secret-key-that-is-long-enough-for-hs256"

/** A temp directory removed when the scope closes (after anything opened in it later). */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "logic-embedded-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

export interface Published {
  readonly recipients: ReadonlyArray<string>
  readonly message: PushMessage
}

/** Records what the Logic offers to the `Committed` queue. */
export const recorder = () => {
  const published: Array<Published> = []
  const publish: CommittedShape["offer"] = (recipients, message) => {
    published.push({ recipients: [...recipients], message })
  }
  return { published, publish }
}

export interface Fixture {
  readonly logic: EmbeddedLogic
  readonly dir: string
  readonly databasePath: string
  readonly published: Array<Published>
}

/** A fresh embedded Logic on a real SQLite file in a temp dir, with a recording publisher. */
export const fixture = (
  options: Partial<LogicEmbeddedOptions> = {},
  publisher?: CommittedShape["offer"]
): Effect.Effect<Fixture, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const databasePath = path.join(dir, "data", "logic.db")
    const { published, publish } = recorder()
    const logic = yield* makeEmbeddedLogic({ databasePath, bcryptRounds: 4, ...options }, publisher ?? publish).pipe(
      Effect.orDie
    )
    return { logic, dir, databasePath, published }
  })

export const registerAll = (logic: EmbeddedLogic, ...usernames: ReadonlyArray<string>) =>
  Effect.forEach(usernames, (username) => logic.register({ username, password: "secret1", nickname: "" }))

export const chat = (
  sessionId: string,
  fromUsername: string,
  content: string,
  extra: Partial<ChatRequest> = {}
): ChatRequest => ({
  sessionId,
  fromUsername,
  toUsername: "",
  content,
  type: "text",
  timestamp: 0n,
  ...extra
})

/** The LogicError an effect failed with; a success fails the test. */
export const failure = <A>(effect: Effect.Effect<A, LogicError>): Effect.Effect<LogicError, A> => Effect.flip(effect)

/** Every session of the user (the first page, which holds all of them in these tests). */
export const sessionsOf = (logic: Pick<EmbeddedLogic, "getSessionList">, username: string) =>
  Effect.map(logic.getSessionList(username), (page) => page.sessions)
