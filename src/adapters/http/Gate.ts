import type * as Http from "node:http"
import type { NodeServerShape } from "../platform/net/NodeServer.js"
import { pathOf } from "./AccessLog.js"
import type { HashPlaces } from "./Limits.js"

export interface GateOptions {
  readonly node: Pick<NodeServerShape, "admitRequest">
  /** The proxy-aware client address of a request. */
  readonly clientIp: (request: Http.IncomingMessage) => string
  readonly logins: HashPlaces
  /** The paths of Login and Register: each costs a password hash. */
  readonly hashing: ReadonlySet<string>
  /** Answers 429 with `Retry-After`, as the API answers (CORS, headers, metrics). */
  readonly refuse: (request: Http.IncomingMessage, response: Http.ServerResponse, retryAfter: number, message: string) => void
}

/**
 * The HTTP API's front step, plain and before any Effect runs, so a flood costs a plain refusal
 * each: the client address's request budget, then, for a login or registration, one of the
 * address's few places for a password hash, given back when the response is done.
 */
export const gate = (
  handler: (request: Http.IncomingMessage, response: Http.ServerResponse) => void,
  options: GateOptions
) =>
(request: Http.IncomingMessage, response: Http.ServerResponse): void => {
  // Cut by the server (pipelined too deep, banned): nothing to answer.
  if (request.socket.destroyed) return
  const ip = options.clientIp(request)
  const retryAfter = options.node.admitRequest(request, ip)
  if (retryAfter > 0) return options.refuse(request, response, retryAfter, `too many requests from this address, retry in ${retryAfter}s`)
  if (!options.hashing.has(pathOf(request.url ?? "/"))) return handler(request, response)
  if (!options.logins.enter(ip)) return options.refuse(request, response, 1, "too many logins at once from this address, retry in 1s")
  response.once("close", () => options.logins.leave(ip))
  handler(request, response)
}
