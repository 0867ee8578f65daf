import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Context, Effect, Either, Exit, Layer, Scheduler, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as LogicEmbedded from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import { SECRET_FILE_NAME } from "../../src/adapters/logic-embedded/Tokens.js"
import type { CommittedMessage } from "../../src/application/Committed.js"
import { Committed } from "../../src/application/Committed.js"
import { Logic, LogicRoutes } from "../../src/application/ports/Logic.js"
import { chat, failure, fixture, recorder, registerAll, SECRET, tempDir, sessionsOf } from "./helpers.js"
import { Metrics } from "../../src/application/ports/Metrics.js"

/** Opens the embedded Logic in its own scope, so a test can close and reopen the same file. */
const openAt = (options: LogicEmbedded.LogicEmbeddedOptions) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const { published, publish } = recorder()
    const logic = yield* LogicEmbedded.makeEmbeddedLogic(options, publish).pipe(Scope.extend(scope))
    return { logic, published, close: Scope.close(scope, Exit.void) }
  })

const startError = (options: LogicEmbedded.LogicEmbeddedOptions) =>
  LogicEmbedded.makeEmbeddedLogic(options, () => {}).pipe(Effect.scoped, Effect.flip)

describe("LogicEmbedded lifecycle", () => {
  it.scopedLive("a restart on the same file keeps users, sessions, messages, read positions and the secret", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const databasePath = path.join(dir, "nested", "deeper", "resonance.db")
      const options = { databasePath, bcryptRounds: 4 }

      const before = yield* openAt(options)
      const [alice] = yield* registerAll(before.logic, "alice", "bob")
      const id = yield* before.logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      const sent = yield* before.logic.sendMessage(chat(id, "alice", "before restart"))
      yield* before.logic.updateReadPosition({ username: "bob", sessionId: id, seqId: 1n })
      yield* before.close
      expect((yield* failure(sessionsOf(before.logic, "alice"))).code).toBe("internal")

      const secretFile = path.join(dir, "nested", "deeper", SECRET_FILE_NAME)
      expect(fs.statSync(secretFile).mode & 0o777).toBe(0o600)
      const secret = fs.readFileSync(secretFile, "utf8")

      const after = yield* openAt(options)
      yield* Effect.addFinalizer(() => after.close)
      expect((yield* after.logic.validateToken(alice!.accessToken)).username).toBe("alice")
      expect((yield* after.logic.login({ username: "bob", password: "secret1" })).user?.username).toBe("bob")
      const history = yield* after.logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 0n, beforeSeq: 0n })
      expect(history.map((message) => message.content)).toEqual(["alice 开始了与你的对话", "before restart"])
      const session = (yield* sessionsOf(after.logic, "bob")).find((entry) => entry.sessionId === id)
      expect(session).toMatchObject({ unreadCount: 1n, lastReadSeq: 1n })
      const next = yield* after.logic.sendMessage(chat(id, "bob", "after restart"))
      expect(next.seqId).toBe(sent.seqId + 1n)
      expect(next.msgId > sent.msgId).toBe(true)
      expect((yield* sessionsOf(after.logic, "alice")).filter((entry) => entry.sessionId === "0")).toHaveLength(1)
      expect(fs.readFileSync(secretFile, "utf8")).toBe(secret)
    }))

  it.scopedLive("with a configured secretKey no secret file is written, and tokens depend on that key", () =>
    Effect.gen(function*() {
      const { logic, dir } = yield* fixture({ secretKey: SECRET })
      const { accessToken } = yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      expect(fs.existsSync(path.join(dir, "data", SECRET_FILE_NAME))).toBe(false)
      const other = yield* fixture({ secretKey: "a-different-secret-key-for-this-test" })
      yield* other.logic.register({ username: "alice", password: "secret1", nickname: "" })
      expect((yield* failure(other.logic.validateToken(accessToken))).code).toBe("unauthenticated")
      // An empty key from configuration means "not configured": the generated secret is used.
      const unset = yield* fixture({ secretKey: "" })
      yield* unset.logic.register({ username: "alice", password: "secret1", nickname: "" })
      expect(fs.readFileSync(path.join(unset.dir, "data", SECRET_FILE_NAME), "utf8").trim()).toMatch(/^[0-9a-f]{64}$/)
    }))

  it.scopedLive("layer provides Logic and LogicRoutes and offers each committed message to Committed, nothing of the sender's socket", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        LogicEmbedded.layer({ databasePath: path.join(dir, "layer.db"), bcryptRounds: 4 }).pipe(
          Layer.provideMerge(Committed.layer),
          Layer.provide(Metrics.layerNoop)
        ),
        scope
      )
      const logic = Context.get(context, Logic)
      const offered: Array<CommittedMessage> = []
      yield* Scope.extend(Context.get(context, Committed).consume((recipients, message) => offered.push({ recipients, message })), scope)
      yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      yield* logic.register({ username: "bob", password: "secret1", nickname: "" })
      const sent = yield* logic.sendMessage(chat("0", "alice", "via layer"), { idempotencyKey: "boot:7:seq-1" })
      // Handed over right after the turn that committed it.
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      expect(offered.map((entry) => [[...entry.recipients].sort(), entry.message.msgId, entry.message.fromUsername])).toEqual([
        [["alice", "bob"], sent.msgId, "alice"]
      ])
      offered.length = 0
      yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      expect(offered.map((entry) => entry.recipients)).toEqual([["alice"], ["bob"]])
      yield* logic.syncStatus({ seqId: 1n, gatewayId: "gw-1", onlineBatch: [{ username: "bob", remoteIp: "", timestamp: 0n }], offlineBatch: [] })
      expect([...(Context.get(context, LogicRoutes).onlineGateways(["bob"]).get("bob") ?? [])]).toEqual(["gw-1"])

      yield* Scope.close(scope, Exit.void)
      // Released: the file is closed and calls fail as typed errors, not defects.
      expect((yield* failure(logic.getContactList("alice"))).code).toBe("internal")
    }))

  it.scopedLive("a batch resumes on the shared run queue after its commit, not on a runner of its own fiber", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice")
      let tasks = 0
      const counting = Scheduler.make((task) => {
        tasks++
        setTimeout(task, 0)
      })
      const results = yield* Effect.withScheduler(logic.sendMessages([{ chat: chat("0", "alice", "batched") }]), counting)
      expect(results.map(Either.isRight)).toEqual([true])
      // The WAL flush ended on the thread pool; the batch came back through the shared queue.
      expect(tasks).toBe(0)
      const unguarded = yield* Effect.withScheduler(Effect.sleep("1 millis"), counting)
      expect(unguarded).toBeUndefined()
      expect(tasks).toBeGreaterThan(0)
    }))

  it.scopedLive("startup fails with EmbeddedLogicError on unusable paths, foreign files, newer schemas and bad options", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const blocker = path.join(dir, "a-file")
      fs.writeFileSync(blocker, "not a directory")
      expect(yield* startError({ databasePath: path.join(blocker, "x.db") })).toMatchObject({
        _tag: "EmbeddedLogicError",
        reason: "Directory"
      })

      const garbage = path.join(dir, "garbage.db")
      fs.writeFileSync(garbage, "this is not an SQLite database, just some text that is long enough".repeat(20))
      expect((yield* startError({ databasePath: garbage })).reason).toBe("Database")

      const future = path.join(dir, "future.db")
      const raw = new Database(future)
      raw.pragma("user_version = 99")
      raw.close()
      const newer = yield* startError({ databasePath: future })
      expect(newer.reason).toBe("Database")
      expect(newer.message).toContain("schema version 99")

      const fine = path.join(dir, "fine.db")
      for (const bad of [{ bcryptRounds: 2 }, { tokenTtlSeconds: 0 }, { workerId: 1024 }, { databasePath: "" }, { secretKey: "short" }]) {
        expect((yield* startError({ databasePath: fine, ...bad })).reason).toBe("Options")
      }
    }))

  it.scopedLive("the database, its WAL and shared memory are 0600 and a created data directory 0700; older files are tightened", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const databasePath = path.join(dir, "data", "logic.db")
      const { logic } = yield* fixture({ databasePath })
      yield* registerAll(logic, "alice")
      const mode = (file: string) => fs.statSync(file).mode & 0o777
      expect(mode(path.join(dir, "data"))).toBe(0o700)
      for (const file of [databasePath, `${databasePath}-wal`, `${databasePath}-shm`, `${databasePath}.lock`]) expect(mode(file), file).toBe(0o600)

      const older = path.join(dir, "older.db")
      const raw = new Database(older)
      raw.pragma("journal_mode = WAL")
      raw.close()
      fs.chmodSync(older, 0o644)
      yield* fixture({ databasePath: older })
      expect(mode(older)).toBe(0o600)
    }))

  it.scopedLive("syncStatus records which gateways hold which users", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const at = 1_700_000_000n
      yield* logic.syncStatus({
        seqId: 1n,
        gatewayId: "gw-1",
        onlineBatch: [
          { username: "alice", remoteIp: "10.0.0.1", timestamp: at },
          { username: "bob", remoteIp: "10.0.0.2", timestamp: at }
        ],
        offlineBatch: []
      })
      yield* logic.syncStatus({
        seqId: 1n,
        gatewayId: "gw-2",
        onlineBatch: [{ username: "alice", remoteIp: "10.0.0.3", timestamp: at }],
        offlineBatch: []
      })
      const online = logic.onlineGateways(["alice", "bob", "carol"])
      expect([...online.entries()].map(([user, gateways]) => [user, [...gateways]])).toEqual([
        ["alice", ["gw-1", "gw-2"]],
        ["bob", ["gw-1"]]
      ])
      yield* logic.syncStatus({ seqId: 2n, gatewayId: "gw-1", onlineBatch: [], offlineBatch: [{ username: "alice", timestamp: at }] })
      expect([...(logic.onlineGateways(["alice"]).get("alice") ?? [])]).toEqual(["gw-2"])
      // Users on one gateway share that gateway's set: alice leaving gw-1 must not touch bob's route.
      expect([...(logic.onlineGateways(["bob"]).get("bob") ?? [])]).toEqual(["gw-1"])
      yield* logic.syncStatus({ seqId: 3n, gatewayId: "gw-1", onlineBatch: [{ username: "alice", remoteIp: "10.0.0.1", timestamp: at }], offlineBatch: [] })
      expect([...(logic.onlineGateways(["alice"]).get("alice") ?? [])].sort()).toEqual(["gw-1", "gw-2"])
      expect(yield* logic.forgetGateway("gw-1")).toBe(2)
      expect(logic.onlineGateways(["bob"]).has("bob")).toBe(false)
      expect([...(logic.onlineGateways(["alice"]).get("alice") ?? [])]).toEqual(["gw-2"])
      yield* logic.syncStatus({ seqId: 4n, gatewayId: "gw-1", onlineBatch: [{ username: "bob", remoteIp: "10.0.0.2", timestamp: at }], offlineBatch: [] })
      expect([...(logic.onlineGateways(["bob"]).get("bob") ?? [])]).toEqual(["gw-1"])
      expect((yield* failure(logic.syncStatus({ seqId: 3n, gatewayId: "", onlineBatch: [], offlineBatch: [] }))).code).toBe(
        "invalid_argument"
      )
    }))

  it.scopedLive("presence in memory only (the gateway's embedded mode): the same routes, no row written, none read", () =>
    Effect.gen(function*() {
      const databasePath = path.join(yield* tempDir, "presence.db")
      const open = (storePresence: boolean) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const logic = yield* LogicEmbedded.makeEmbeddedLogic({ databasePath, bcryptRounds: 4, storePresence }, () => {}).pipe(
            Effect.orDie,
            Scope.extend(scope)
          )
          return { logic, close: Scope.close(scope, Exit.void) }
        })
      // A row a reference Logic left in the file.
      const stored = yield* open(true)
      yield* stored.logic.syncStatus({ seqId: 1n, gatewayId: "gw-old", onlineBatch: [{ username: "carol", remoteIp: "", timestamp: 1n }], offlineBatch: [] })
      yield* stored.close

      const { close, logic } = yield* open(false)
      // Not read into the routes.
      expect(logic.onlineGateways(["carol"]).size).toBe(0)
      const at = 1_700_000_000n
      yield* logic.syncStatus({
        seqId: 1n,
        gatewayId: "gw-1",
        onlineBatch: [{ username: "alice", remoteIp: "10.0.0.1", timestamp: at }, { username: "bob", remoteIp: "10.0.0.2", timestamp: at }],
        offlineBatch: []
      })
      yield* logic.syncStatus({ seqId: 2n, gatewayId: "gw-2", onlineBatch: [{ username: "alice", remoteIp: "", timestamp: at }], offlineBatch: [] })
      yield* logic.syncStatus({ seqId: 3n, gatewayId: "gw-1", onlineBatch: [], offlineBatch: [{ username: "alice", timestamp: at }] })
      expect([...logic.onlineGateways(["alice", "bob", "carol"]).entries()].map(([user, gateways]) => [user, [...gateways]])).toEqual([
        ["alice", ["gw-2"]],
        ["bob", ["gw-1"]]
      ])
      expect(yield* logic.forgetGateway("gw-1")).toBe(1)
      expect(logic.onlineGateways(["bob"]).has("bob")).toBe(false)
      expect((yield* failure(logic.syncStatus({ seqId: 4n, gatewayId: "", onlineBatch: [], offlineBatch: [] }))).code).toBe("invalid_argument")
      yield* close

      // Nothing written: the file holds the old row only.
      const file = new Database(databasePath, { readonly: true })
      try {
        expect(file.prepare("SELECT username, gateway_id FROM presence").all()).toEqual([{ username: "carol", gateway_id: "gw-old" }])
      } finally {
        file.close()
      }
    }))
})
