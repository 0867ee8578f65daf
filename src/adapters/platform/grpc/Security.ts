import * as grpc from "@grpc/grpc-js"
import { Config, Context, Data, Effect, Either, Layer } from "effect"
import { timingSafeEqual } from "node:crypto"
import * as Fs from "node:fs"
import { compileIpFilter } from "../net/IpRules.js"
import type { IpSet } from "../net/IpRules.js"
import { bool, list, str } from "../config/Settings.js"
import { GrpcStatusError } from "./Status.js"

/**
 * How the internal gRPC services (PushService, the Logic services) and their clients prove to
 * each other who they are: a shared token in the `authorization` metadata, mutual TLS, or both.
 */
export interface InternalSecurityOptions {
  /** Shared secret sent as `authorization: Bearer <token>`; "" for none. */
  readonly token: string
  /** Accept peers that present nothing, when neither a token nor TLS is configured. */
  readonly insecure: boolean
  /** PEM files of mutual TLS: all three or none; each side presents `cert` and trusts peers signed by `ca`. */
  readonly tls: {
    readonly ca: string
    readonly cert: string
    readonly key: string
    /** Name the peer's certificate must carry when it differs from the dialled host. */
    readonly serverName: string
  }
  /** Address lists applied to the internal port, as `security.ip_allow`/`ip_deny` are to the public one. */
  readonly ipAllow: ReadonlyArray<string>
  readonly ipDeny: ReadonlyArray<string>
}

/** `internal.*` as written; the address lists are compiled (and a bad entry named) when the Layer is built. */
export const internalSettings: Config.Config<InternalSecurityOptions> = Config.nested(
  Config.all({
    token: str("token", ""),
    insecure: bool("insecure", false),
    tls: Config.nested(
      Config.all({ ca: str("ca", ""), cert: str("cert", ""), key: str("key", ""), serverName: str("server_name", "") }),
      "tls"
    ),
    ipAllow: list("ip_allow"),
    ipDeny: list("ip_deny")
  }),
  "internal"
)

export const insecureInternal: InternalSecurityOptions = {
  token: "",
  insecure: true,
  tls: { ca: "", cert: "", key: "", serverName: "" },
  ipAllow: [],
  ipDeny: []
}

export class InternalSecurityError extends Data.TaggedError("InternalSecurityError")<{
  readonly reason: "Tls" | "IpRules"
  readonly message: string
}> {}

/** What an incoming call shows of itself before it is admitted. */
export interface IncomingCall {
  readonly metadata: grpc.Metadata
  getPeer(): string
}

/** How internal calls are authenticated, for logs at start. */
export type InternalAuthMode = "token" | "mtls" | "token+mtls" | "insecure" | "refuse-all"

/** The PEM bytes of mutual TLS, for servers built on `node:http2` rather than grpc-js. */
export interface MutualTlsPem {
  readonly ca: Buffer
  readonly cert: Buffer
  readonly key: Buffer
}

export interface InternalSecurity {
  readonly mode: InternalAuthMode
  readonly serverCredentials: grpc.ServerCredentials
  /** The same server side as PEM bytes; undefined without mutual TLS. */
  readonly serverTls: MutualTlsPem | undefined
  /** The refusal of an incoming call, or undefined when it may proceed. Plain: runs per call. */
  readonly admit: (call: IncomingCall) => GrpcStatusError | undefined
  /** `admit` for a call seen as its peer's address and its `authorization` header. */
  readonly admitPeer: (host: string, authorization: string | undefined) => GrpcStatusError | undefined
  readonly channelCredentials: grpc.ChannelCredentials
  readonly channelOptions: grpc.ChannelOptions
  /** Adds the token to an outgoing call's metadata. */
  readonly authorize: (metadata: grpc.Metadata) => grpc.Metadata
}

/** `host` of a grpc-js peer string (`1.2.3.4:5678`, `::1:5678`). */
const peerHost = (peer: string): string => {
  const colon = peer.lastIndexOf(":")
  return colon === -1 ? peer : peer.slice(0, colon)
}

const readPem = (key: string, file: string) =>
  Effect.try({
    try: () => Fs.readFileSync(file),
    catch: (error) =>
      new InternalSecurityError({ reason: "Tls", message: `internal.tls.${key}: cannot read ${file}: ${String(error)}` })
  })

/** Reads the PEM files once and compiles the address lists; fails naming the key at fault. */
export const makeInternalSecurity = (options: InternalSecurityOptions): Effect.Effect<InternalSecurity, InternalSecurityError> =>
  Effect.gen(function*() {
    const { tls } = options
    const given = (["ca", "cert", "key"] as const).filter((name) => tls[name] !== "")
    const mutual = given.length === 3
    if (given.length > 0 && !mutual) {
      const missing = (["ca", "cert", "key"] as const).filter((name) => tls[name] === "").map((name) => `internal.tls.${name}`)
      return yield* new InternalSecurityError({ reason: "Tls", message: `mutual TLS needs ${missing.join(" and ")} as well` })
    }
    const ca = mutual ? yield* readPem("ca", tls.ca) : null
    const cert = mutual ? yield* readPem("cert", tls.cert) : null
    const key = mutual ? yield* readPem("key", tls.key) : null
    const ipAllowed: IpSet = yield* Either.mapLeft(
      compileIpFilter({ allow: "internal.ip_allow", deny: "internal.ip_deny" }, { allow: options.ipAllow, deny: options.ipDeny }),
      (error) => new InternalSecurityError({ reason: "IpRules", message: error.message })
    )

    const hasToken = options.token !== ""
    const mode: InternalAuthMode = hasToken
      ? (mutual ? "token+mtls" : "token")
      : mutual
      ? "mtls"
      : options.insecure
      ? "insecure"
      : "refuse-all"
    const bearer = `Bearer ${options.token}`
    const expected = hasToken ? Buffer.from(bearer) : undefined
    // A value of the right length is compared in constant time; only a wrong length answers sooner.
    const isExpected = (given: string) => {
      const bytes = Buffer.from(given)
      return bytes.length === expected!.length && timingSafeEqual(bytes, expected!)
    }

    // Admission runs per call and a peer makes many calls: its verdict is kept.
    const anyPeer = options.ipAllow.length === 0 && options.ipDeny.length === 0
    const verdicts = new Map<string, boolean>()
    const hostAllowed = (host: string): boolean => {
      let verdict = verdicts.get(host)
      if (verdict === undefined) {
        if (verdicts.size >= 4_096) verdicts.clear()
        verdict = ipAllowed(host)
        verdicts.set(host, verdict)
      }
      return verdict
    }

    const admitPeer = (host: string, given: string | undefined): GrpcStatusError | undefined => {
      if (!anyPeer && !hostAllowed(host)) {
        return new GrpcStatusError({ status: grpc.status.PERMISSION_DENIED, message: "peer address is not allowed" })
      }
      if (expected !== undefined) {
        if (typeof given !== "string" || !isExpected(given)) {
          return new GrpcStatusError({ status: grpc.status.UNAUTHENTICATED, message: "missing or wrong internal token" })
        }
        return undefined
      }
      if (mode === "refuse-all") {
        return new GrpcStatusError({
          status: grpc.status.UNAUTHENTICATED,
          message: "internal RPCs are closed: configure internal.token or internal.tls (or internal.insecure)"
        })
      }
      return undefined
    }

    const admit = (call: IncomingCall): GrpcStatusError | undefined => {
      const given = call.metadata.get("authorization")[0]
      return admitPeer(anyPeer ? "" : peerHost(call.getPeer()), typeof given === "string" ? given : undefined)
    }

    return {
      mode,
      serverTls: mutual ? { ca: ca!, cert: cert!, key: key! } : undefined,
      // `true`: the server demands a client certificate signed by the CA.
      serverCredentials: mutual
        ? grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert!, private_key: key! }], true)
        : grpc.ServerCredentials.createInsecure(),
      admit,
      admitPeer,
      channelCredentials: mutual ? grpc.credentials.createSsl(ca, key, cert) : grpc.credentials.createInsecure(),
      channelOptions: tls.serverName === "" ? {} : { "grpc.ssl_target_name_override": tls.serverName },
      authorize: (metadata) => {
        if (hasToken) metadata.set("authorization", bearer)
        return metadata
      }
    }
  })

/** The internal RPC security of this process, built once (PEM files read, lists compiled). */
export class InternalAuth extends Context.Tag("resonance/grpc/InternalAuth")<InternalAuth, InternalSecurity>() {}

export const layer = (options: InternalSecurityOptions): Layer.Layer<InternalAuth, InternalSecurityError> =>
  Layer.effect(InternalAuth, makeInternalSecurity(options))

/** As `internal.*` says. */
export const layerConfig = Layer.unwrapEffect(Effect.map(internalSettings, layer))

/** No token, no TLS, every peer admitted: for tests of other things. */
export const layerTest: Layer.Layer<InternalAuth> = Layer.orDie(layer(insecureInternal))
