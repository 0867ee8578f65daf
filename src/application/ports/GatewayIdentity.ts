import { Context, Layer, Stream } from "effect"

/** Who this gateway is in the fleet: the id Logic sees in SyncStatus and etcd holds. */
export class GatewayIdentity extends Context.Tag("resonance/GatewayIdentity")<
  GatewayIdentity,
  {
    /** Read live: it may change (a fallback until etcd answers, a new claim after etcd lost ours). */
    readonly id: string
    /** Each id taken after the one current when subscribing. */
    readonly changes: Stream.Stream<string>
  }
>() {
  /** A fixed id (embedded mode: nothing else knows this gateway). */
  static readonly layer = (id: string): Layer.Layer<GatewayIdentity> =>
    Layer.succeed(GatewayIdentity, { id, changes: Stream.empty })

  static readonly layerTest = (id = "gateway-test-001"): Layer.Layer<GatewayIdentity> => GatewayIdentity.layer(id)
}
