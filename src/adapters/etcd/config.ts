import { Config, Effect } from "effect"
import { duration, list, str } from "../platform/config/Settings.js"
import type { EtcdClientOptions } from "./Client.js"
import { etcdSecurity } from "./Client.js"

/** `etcd.*`: where etcd is and how to prove who we are to it. */
export const etcdSettings = Config.nested(
  Config.all({
    endpoints: list("endpoints"),
    username: str("username", ""),
    password: str("password", ""),
    tls: Config.nested(Config.all({ ca: str("ca", ""), cert: str("cert", ""), key: str("key", "") }), "tls")
  }),
  "etcd"
)

/** `registry.*`: where entries live and how long one outlives its process. */
export const registrySettings = Config.nested(
  Config.all({ namespace: str("namespace", "/resonance/services"), defaultTtl: duration("default_ttl", "30s") }),
  "registry"
)

/** The etcd client's options, its PEM files read once. */
export const etcdClientConfig = Effect.flatMap(
  etcdSettings,
  (etcd) => Effect.map(etcdSecurity(etcd), (security): EtcdClientOptions => ({ endpoints: etcd.endpoints, ...security }))
)
