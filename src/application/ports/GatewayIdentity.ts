import { Context, Layer } from "effect"

/** Who this gateway is in the fleet: the id Logic sees in SyncStatus and etcd holds. */
export class GatewayIdentity extends Context.Tag("resonance/GatewayIdentity")<
  GatewayIdentity,
  { readonly id: string }
>() {
  static readonly layer = (id: string): Layer.Layer<GatewayIdentity> => Layer.succeed(GatewayIdentity, { id })
}
