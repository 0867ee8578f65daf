import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as Net from "node:net"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import * as NodeServer from "../../src/adapters/platform/net/NodeServer.js"

describe("NodeServer at shutdown", () => {
  it.live("an upgrade that arrives once the WebSocket adapter is gone is answered 503, and the server still closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        NodeServer.layer({ port: 0, host: "127.0.0.1" }).pipe(Layer.provide(FrontDoor.layerTest())),
        scope
      )
      const { port } = Context.get(context, NodeServer.NodeServer)
      const answer = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const socket = Net.connect(port, "127.0.0.1", () =>
            socket.write("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
          let text = ""
          socket.on("data", (chunk) => (text += chunk))
          socket.on("error", () => {})
          socket.on("close", () => resolve(text))
        })
      )
      expect(answer).toContain("503")
      // Closing the server waits for no orphaned upgrade socket (it used to wait out the shutdown budget).
      const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("3 seconds"), Effect.either)
      expect(closed._tag).toBe("Right")
    }))
})
