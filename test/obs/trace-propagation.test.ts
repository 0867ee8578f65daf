import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Option } from "effect"
import { withFrontDoor } from "../support/door.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import { layerTest as layerTracingTest } from "../../src/adapters/obs/Tracing.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { connectClient, grpcLogic, promise, serverPort, testGateway, tokenFor } from "../support/gateway.js"
import { waitFor } from "../support/process.js"

describe("trace propagation across WebSocket, Dispatcher and gRPC", () => {
  it.live("the chat span is a child of the WebSocket session span and the Logic server sees the same trace", () => {
    const exporter = new InMemorySpanExporter()
    const serverSide: Array<{ traceId: string; spanId: string }> = []
    return Effect.gen(function*() {
      // The Logic service: a fake served over real gRPC, recording the span its handler runs in.
      const logicServer = yield* Effect.provide(
        Logic,
        Logic.layerTest({
          validateToken: (token) => Effect.succeed({ username: token.slice(4), nickname: "", avatarUrl: "" }),
          sendMessage: () =>
            Effect.gen(function*() {
              const span = yield* Effect.currentSpan
              serverSide.push({ traceId: span.traceId, spanId: span.spanId })
              return { msgId: 1n, seqId: 1n }
            }).pipe(Effect.orDie)
        })
      )
      const { port: logicPort } = yield* serveLogic(logicServer, { port: 0, host: "127.0.0.1" }).pipe(
        Effect.provide(InternalAuth.layerTest),
        withFrontDoor
      )

      // With a collector named, the Dispatcher traces chats; the spans go to the in-memory exporter provided below.
      const gateway = testGateway({
        config: { observability: { trace: { endpoint: "http://127.0.0.1:4318" } }, logic: { timeout: "2s", retries: 1 } },
        logicLayer: grpcLogic(`127.0.0.1:${logicPort}`)
      })

      yield* Effect.gen(function*() {
        const port = yield* serverPort
        const client = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
        client.send({
          seq: "traced",
          payload: {
            $case: "chat",
            value: { sessionId: "s", fromUsername: "", toUsername: "", content: "hi", type: "text", timestamp: 0n }
          }
        })
        const ack = yield* promise(() => client.next((p) => p.seq === "traced"))
        expect(ack.payload?.$case === "ack" && ack.payload.value.error).toBe("")
        client.ws.close()
        yield* promise(() => client.closed)
        // The server ends the session's span once it has seen the close too.
        yield* promise(() => waitFor(async () => exporter.getFinishedSpans().some((span) => span.name === "WebSocket.session"), 5_000, "the session span"))
      }).pipe(Effect.provide(gateway), Effect.scoped)

      const spans = exporter.getFinishedSpans()
      const byName = (name: string) => spans.find((span) => span.name === name)
      const session = byName("WebSocket.session")
      const chat = byName("Dispatcher.chat")
      const logicCall = byName("Logic.sendMessage")
      expect(session).toBeDefined()
      expect(chat?.parentSpanContext?.spanId).toBe(session!.spanContext().spanId)
      expect(chat?.spanContext().traceId).toBe(session!.spanContext().traceId)
      expect(logicCall?.parentSpanContext?.spanId).toBe(chat!.spanContext().spanId)
      expect(session!.attributes["user.name"]).toBe("alice")
      // The gRPC server continued the trace: same trace id, under the client call.
      expect(serverSide).toHaveLength(1)
      expect(serverSide[0]!.traceId).toBe(session!.spanContext().traceId)
      const serverSpan = spans.find((span) => span.spanContext().spanId === serverSide[0]!.spanId)
      expect(Option.fromNullable(serverSpan?.parentSpanContext?.spanId)).toEqual(Option.some(logicCall!.spanContext().spanId))
    }).pipe(Effect.provide(layerTracingTest(exporter)), Effect.scoped)
  })
})
