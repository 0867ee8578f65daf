import { ConfigProvider, Effect } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Util from "node:util"
import { parse as parseYaml } from "yaml"

/**
 * Where settings come from: `gateway.yaml`, `gateway.<env>.yaml`, `.env` and the environment, each
 * flattened to `RESONANCE_*` names and merged by precedence into one `ConfigProvider`.
 */
export const ENV_PREFIX = "RESONANCE_"

/** `{service: {http_port: 1}}` → `RESONANCE_SERVICE_HTTP_PORT=1`; lists become comma-joined. */
export const flattenYaml = (value: unknown, prefix = ENV_PREFIX.slice(0, -1), out = new Map<string, string>()) => {
  if (Array.isArray(value)) {
    out.set(prefix, value.map(String).join(","))
  } else if (value !== null && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) flattenYaml(child, `${prefix}_${key.toUpperCase()}`, out)
  } else if (value !== undefined && value !== null) {
    out.set(prefix, String(value))
  }
  return out
}

/** `.env` as dotenv reads it (Node's own parser): comments, `export`, quotes, `KEY="a" # note`. */
export const parseDotEnv = (text: string): Map<string, string> => new Map(Object.entries(Util.parseEnv(text)).filter((entry): entry is [string, string] => entry[1] !== undefined))

export interface ConfigSources {
  readonly directory: string
  readonly environment: Record<string, string | undefined>
  /** `RESONANCE_*` values below every source: another program's own defaults. */
  readonly defaults?: Readonly<Record<string, string>>
  /** Base name of the YAML files: `<name>.yaml`, `<name>.<env>.yaml`. Default `gateway`. */
  readonly name?: string
}

/** Where the configuration was found, for the start-up log. */
export interface ConfigReport {
  readonly directory: string
  /** Files read, in the order applied. */
  readonly files: ReadonlyArray<string>
  /** Where `etcd.endpoints` came from (a file or the environment); `undefined`: nowhere, embedded mode. */
  readonly etcdEndpointsFrom: string | undefined
}

/**
 * The directory holding `gateway.yaml` and `.env`: `RESONANCE_CONFIG_DIR`, else `./configs` when it
 * exists (the Go gateway's location, mounted at `/app/configs` in its image), else the working directory.
 */
export const configDirectory = (cwd: string, environment: Record<string, string | undefined>): string => {
  const explicit = environment[`${ENV_PREFIX}CONFIG_DIR`]
  if (explicit !== undefined && explicit !== "") return Path.resolve(cwd, explicit)
  const configs = Path.join(cwd, "configs")
  try {
    if (Fs.statSync(configs).isDirectory()) return configs
  } catch {
    // no ./configs: the working directory
  }
  return cwd
}

const readIfExists = (file: string): string | undefined => {
  try {
    return Fs.readFileSync(file, "utf8")
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw error
  }
}

export interface Collected {
  readonly settings: Map<string, string>
  readonly report: ConfigReport
}

/**
 * Flattens every source into one map of `RESONANCE_*` names, applying the precedence
 * environment > `.env` > `gateway.<env>.yaml` > `gateway.yaml`, and says which files were read.
 */
export const collect = (sources: ConfigSources): Effect.Effect<Collected, Error> =>
  Effect.try({
    try: () => {
      const name = sources.name ?? "gateway"
      const files: Array<string> = []
      const origin = new Map<string, string>()
      const dotEnvPath = Path.join(sources.directory, ".env")
      const dotEnvText = readIfExists(dotEnvPath)
      const dotEnv = parseDotEnv(dotEnvText ?? "")
      const fromEnvironment = new Map<string, string>()
      for (const [key, value] of Object.entries(sources.environment)) {
        if (key.startsWith(ENV_PREFIX) && value !== undefined) fromEnvironment.set(key, value)
      }
      const envName = fromEnvironment.get(`${ENV_PREFIX}ENV`) ?? dotEnv.get(`${ENV_PREFIX}ENV`)
      const yamlFiles = [Path.join(sources.directory, `${name}.yaml`)]
      if (envName !== undefined && envName !== "") yamlFiles.push(Path.join(sources.directory, `${name}.${envName}.yaml`))
      const merged = new Map<string, string>(Object.entries(sources.defaults ?? {}))
      for (const key of merged.keys()) origin.set(key, "defaults")
      for (const file of yamlFiles) {
        const text = readIfExists(file)
        if (text === undefined) continue
        files.push(file)
        for (const [k, v] of flattenYaml(parseYaml(text) ?? {})) {
          merged.set(k, v)
          origin.set(k, file)
        }
      }
      if (dotEnvText !== undefined) files.push(dotEnvPath)
      for (const [k, v] of dotEnv) {
        if (!k.startsWith(ENV_PREFIX)) continue
        merged.set(k, v)
        origin.set(k, dotEnvPath)
      }
      for (const [k, v] of fromEnvironment) {
        merged.set(k, v)
        origin.set(k, "environment")
      }
      // Upstream's GetHost: an empty or absent service.host advertises the container's name.
      const hostKey = `${ENV_PREFIX}SERVICE_HOST`
      const hostname = (sources.environment.HOSTNAME ?? "").trim()
      if ((merged.get(hostKey) ?? "").trim() === "" && hostname !== "") {
        merged.set(hostKey, hostname)
        origin.set(hostKey, "$HOSTNAME")
      }
      const endpointsKey = `${ENV_PREFIX}ETCD_ENDPOINTS`
      const endpoints = merged.get(endpointsKey)
      return {
        settings: merged,
        report: {
          directory: sources.directory,
          files,
          etcdEndpointsFrom: endpoints !== undefined && endpoints.trim() !== "" ? origin.get(endpointsKey) : undefined
        }
      }
    },
    catch: (error) => new Error(`cannot read configuration: ${error instanceof Error ? error.message : String(error)}`)
  })

export const providerFromSettings = (settings: Map<string, string>): ConfigProvider.ConfigProvider =>
  ConfigProvider.fromMap(settings, { pathDelim: "_", seqDelim: "," }).pipe(
    ConfigProvider.constantCase,
    ConfigProvider.nested(ENV_PREFIX.slice(0, -1))
  )

export const defaultSources = (name?: string): ConfigSources => ({
  directory: configDirectory(process.cwd(), process.env),
  environment: process.env,
  ...(name !== undefined ? { name } : {})
})
