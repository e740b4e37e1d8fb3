import { toRespError, type ProxyError } from '../errors.js'
import type { HubPins } from '../pubsub/pubsub-hub.js'
import { InternalSink, ReplySlot } from '../routing/reply-slot.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { Pin } from '../routing/router.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterDispatcher } from './cluster-dispatcher.js'
import type { ClusterPin, ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'

/** The shared subscriber connection's pins, and PUBLISH sent where that connection is. */
export interface ClusterHub extends HubPins {
  /** PUBLISH on the master holding the subscriber connection (any master while there is none). */
  publish (frame: Buffer, resp: 2 | 3, done: (reply: Buffer) => void): void
}

/**
 * The shared subscriber connection of cluster mode. A cluster delivers PUBLISH to every node
 * (the cluster bus broadcasts it), so one subscriber connection on any master hears every
 * channel and pattern whichever node a publisher writes to: the hub of standalone mode works
 * as it is, with its connection pinned on a master. When that connection is lost, the hub
 * takes another and subscribes the union again, on the same master if it can be reached, else
 * on another (its node failed); the slot map is fetched again meanwhile.
 *
 * PUBLISH through respool goes to the master holding the subscriber connection, so that the
 * count in its reply includes that connection once, which the hub replaces with respool's own
 * subscribers (as one Redis would count them).
 */
export function clusterHub (pins: ClusterPins, dispatcher: ClusterDispatcher): ClusterHub {
  const topology = dispatcher.topology
  /** The master whose connection was lost last: another is preferred. */
  let avoid: string | null = null
  let chosen: ClusterNode | null = null
  let held: ClusterNode | null = null
  const choose = (): ClusterNode | null => {
    let first: ClusterNode | null = null
    for (const node of topology.masters.values()) {
      first ??= node
      if (node.key !== avoid) return (chosen = node)
    }
    return (chosen = first)
  }
  return {
    acquirePin (deadlineMs, kind) {
      const acquisition = pins.acquire(choose, deadlineMs, kind)
      const promise = acquisition.promise.then((pin) => {
        held = pin.node
        return pin as Pin
      }, (err: unknown) => {
        if (chosen !== null) avoid = chosen.key
        void topology.refresh('subscriber connection failed')
        throw err
      })
      return { promise, cancel: acquisition.cancel }
    },
    releasePin (pin, how) {
      const node = (pin as ClusterPin).node
      if (held === node) held = null
      // Lost: the same master is tried first (a killed connection, a restart), since a node the
      // hub has not listened on may still deliver a message the old one already did (the
      // cluster bus is asynchronous); only a master that cannot be reached is left for another.
      if (how === 'destroy') void topology.refresh('subscriber connection lost')
      pins.release(pin as ClusterPin, how)
    },
    publish (frame, resp, done) {
      const node = held ?? topology.anyMaster()
      if (node === null) {
        done(Buffer.from('-CLUSTERDOWN The cluster is down\r\n'))
        return
      }
      const send = (conn: UpstreamConnection): void => {
        syncLaneState(conn, 0, resp)
        conn.send(frame, new ReplySlot(new InternalSink((reply, err) => { done(reply ?? toRespError(err as ProxyError)) }), null))
      }
      const ready = dispatcher.lanes.ready(node)
      if (ready !== null) send(ready)
      else dispatcher.lanes.open(node).then(send, (err: ProxyError) => { done(toRespError(err)) })
    }
  }
}
