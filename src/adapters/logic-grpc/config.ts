/** Aliases for src/main.ts and src/gateway-config.ts until they import `LogicGrpc.js` itself; then this file goes. */
export { layerConfig, logicCallSettings, logicServiceNameSetting } from "./LogicGrpc.js"
