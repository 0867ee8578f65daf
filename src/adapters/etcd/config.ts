/**
 * @deprecated Each setting now lives in the module that reads it (`Client.ts`, `Registry.ts`); this
 * re-export goes once `src/main.ts` and `src/gateway-config.ts` import them there.
 */
export { etcdClientConfig, etcdSettings } from "./Client.js"
export { registrySettings } from "./Registry.js"
