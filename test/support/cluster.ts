import * as grpc from "@grpc/grpc-js"
import type { Etcd3 } from "etcd3"
import * as Net from "node:net"
import { PushServiceClient } from "../../src/gen/gateway/v1/push.js"
import type { PushRequest, PushResponse } from "../../src/gen/gateway/v1/push.js"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import type { RunningProcess } from "./process.js"
import { startProcess, waitFor } from "./process.js"

export const portOpen = (port: number, host = "127.0.0.1") =>
  new Promise<boolean>((resolve) => {
    const socket = Net.connect(port, host)
    socket.once("connect", () => (socket.destroy(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

/** The registry entries of one service, key → parsed JSON. */
export const registered = async (etcd: Etcd3, service: string): Promise<Record<string, any>> => {
  const all = await etcd.getAll().prefix(`/resonance/services/${service}/`).strings()
  return Object.fromEntries(Object.entries(all).map(([key, value]) => [key, JSON.parse(value)]))
}

/** `npm run logic` on `port`, resolved once it serves and is registered in etcd. */
export const startReferenceLogic = async (
  etcd: Etcd3,
  port: number,
  env: Record<string, string>
): Promise<RunningProcess> => {
  const running = startProcess("src/logic-main.ts", {
    RESONANCE_SERVICE_HOST: "127.0.0.1",
    RESONANCE_LOG_LEVEL: "warn",
    ...env,
    RESONANCE_SERVICE_GRPC_PORT: String(port)
  })
  await waitFor(
    async () =>
      (await portOpen(port)) && (await etcd.getAll().prefix("/resonance/services/logic-service/").keys()).length > 0,
    30_000,
    "logic-service serving and registered"
  )
  return running
}

/** PushService.Push as the Task service calls it: with `token` as the internal token, or none. */
export const push = (address: string, request: PushRequest, token: string | null) =>
  new Promise<PushResponse>((resolve, reject) => {
    const client = new PushServiceClient(address, grpc.credentials.createInsecure())
    const metadata = new grpc.Metadata()
    if (token !== null) metadata.set("authorization", `Bearer ${token}`)
    client.push(request, metadata, { deadline: Date.now() + 5_000 }, (error, response) => {
      client.close()
      if (error) reject(error)
      else resolve(response)
    })
  })

export const chat = (seq: string, sessionId: string, content: string): WsPacket => ({
  seq,
  payload: { $case: "chat", value: { sessionId, fromUsername: "", toUsername: "", content, type: "text", timestamp: 0n } }
})
