import type { HubPins } from '../pubsub/pubsub-hub.js'
import type { Pin } from '../routing/router.js'
import type { ClusterPin, ClusterPins } from './cluster-pins.js'
import type { ClusterTopology } from './cluster-topology.js'

/**
 * The shared subscriber connection of cluster mode. A cluster delivers PUBLISH to every node
 * (the cluster bus broadcasts it), so one subscriber connection on any master hears every
 * channel and pattern whichever node a publisher writes to: the hub of standalone mode works
 * as it is, with its connection pinned on a master. It takes the master keyless commands go
 * to, so that PUBLISH through respool is answered by the node holding the subscriber
 * connection and the hub can count respool's subscribers in its reply. When the connection is
 * lost (its node failed), the hub takes another at once and subscribes the union again; the
 * slot map is fetched again meanwhile, so a failed master is not chosen again once replaced.
 */
export function clusterHubPins (pins: ClusterPins, topology: ClusterTopology): HubPins {
  return {
    acquirePin (deadlineMs, kind) {
      const acquisition = pins.acquire(() => topology.anyMaster(), deadlineMs, kind)
      return { promise: acquisition.promise as Promise<Pin>, cancel: acquisition.cancel }
    },
    releasePin (pin, how) {
      if (how === 'destroy') void topology.refresh('subscriber connection lost')
      pins.release(pin as ClusterPin, how)
    }
  }
}
