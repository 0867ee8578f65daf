const allowHeaders = [
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-accept-encoding",
  "connect-content-encoding",
  "authorization",
  "x-grpc-web",
  "x-user-agent",
  "grpc-timeout",
  "x-request-id",
  "traceparent",
  "tracestate"
].join(", ")

const exposeHeaders = [
  "retry-after",
  "www-authenticate",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "connect-content-encoding",
  "content-encoding"
].join(", ")

export interface Cors {
  /** Headers for a response to a request with this Origin (none allowed: no Allow-Origin). */
  readonly headers: (origin: string | undefined) => Readonly<Record<string, string>>
  /** Extra headers of a preflight answer. */
  readonly preflight: Readonly<Record<string, string>>
}

/** CORS for browser clients; `"*"` among the origins allows any origin (echoed back). */
export const makeCors = (origins: ReadonlyArray<string>): Cors => {
  const anyOrigin = origins.includes("*")
  const allowed = new Set(origins)
  const base = { "access-control-expose-headers": exposeHeaders, vary: "Origin" }
  const wildcard = { ...base, "access-control-allow-origin": "*" }
  return {
    headers: (origin) => {
      if (origin === undefined || origin === "") return anyOrigin ? wildcard : base
      return anyOrigin || allowed.has(origin) ? { ...base, "access-control-allow-origin": origin } : base
    },
    preflight: {
      "access-control-allow-methods": "GET, POST, OPTIONS",
      "access-control-allow-headers": allowHeaders,
      "access-control-max-age": "7200"
    }
  }
}
