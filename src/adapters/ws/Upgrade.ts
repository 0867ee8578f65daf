import * as Http from "node:http"
import type { Duplex } from "node:stream"
import type { FailureCode } from "../../domain/Errors.js"
import { failureCodes } from "../../domain/Errors.js"
import { tokenFromAuthorization } from "../../domain/Token.js"

/** Answers an upgrade with an HTTP error; its status is the failure code's (the domain's table). */
export const rejectUpgrade = (socket: Duplex, code: FailureCode, message: string, extraHeaders: Record<string, string> = {}) => {
  if (socket.destroyed) return
  const status = failureCodes[code].http
  const body = JSON.stringify({ code, message })
  const headers = [
    `HTTP/1.1 ${status} ${Http.STATUS_CODES[status] ?? "Error"}`,
    "Connection: close",
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(extraHeaders).map(([k, v]) => `${k}: ${v}`)
  ]
  socket.end(`${headers.join("\r\n")}\r\n\r\n${body}`)
}

/** The access token of an upgrade (`query` is the URL's after `?`): `?token=` as the official client sends it, else the Authorization header. */
export const upgradeToken = (request: Http.IncomingMessage, query: string): string | undefined => {
  const fromQuery = query === "" ? null : new URLSearchParams(query).get("token")
  if (fromQuery !== null && fromQuery !== "") return fromQuery
  return tokenFromAuthorization(request.headers.authorization)
}
