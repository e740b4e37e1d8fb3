import type { ProxyServer } from '../proxy-server.js'

/**
 * respool's upstream connections as an operator sees them (/metrics, RESPOOL POOLS and STATS):
 * the same figures in either mode, from the pool and router, or from the cluster's lanes and pins.
 */

/** respool's connections to Redis now, in either mode (/metrics, RESPOOL POOLS). */
export interface UpstreamUse {
  /** --pool-size: the bound on all of them. */
  max: number
  /** Open or opening. */
  connections: number
  /** Open and unused. */
  idle: number
  /** Carrying multiplexed traffic (lanes). */
  shared: number
  /** Held by one client each (or by the shared subscriber). */
  pinned: number
  maxPins: number
  /** Clients waiting for a pin. */
  waitingPins: number
  /** Requests waiting for a connection of the pool (lane growth, pins). */
  waitingConnections: number
}

/**
 * The upstream connections: the pool's (one Redis, or the master sentinels name), or in
 * cluster mode the lanes (one per master), the pins and the slot-map fetch, which share
 * --pool-size the same way.
 */
export function upstreamUse (server: ProxyServer): UpstreamUse {
  const cluster = server.cluster
  const pins = server.clusterPins
  if (cluster !== null && pins !== null) {
    return {
      max: server.config.poolSize,
      connections: cluster.lanes.size + pins.open + cluster.topology.fetching,
      idle: pins.idle,
      shared: cluster.lanes.size,
      pinned: pins.held,
      maxPins: pins.maxPins,
      waitingPins: pins.waiting,
      waitingConnections: 0
    }
  }
  const pool = server.pool.stats
  return {
    max: pool.max,
    connections: pool.size,
    idle: pool.available,
    shared: server.router.laneCount,
    pinned: server.router.pinCount,
    maxPins: server.router.maxPins,
    waitingPins: server.router.pinsWaiting,
    waitingConnections: pool.waiting
  }
}

/** Connections pinned since start, by reason (index: PIN_REASONS), in either mode. */
export function pinsTotalByReason (server: ProxyServer): number[] {
  const cluster = server.clusterPins?.pinsByReason
  return server.stats.pinsByReason.map((n, i) => n + (cluster?.[i] ?? 0))
}

/** Upstream connections opened, and attempts that failed, since start (cluster mode: lanes and pins). */
export function upstreamConnects (server: ProxyServer): { connects: number, connectFailures: number } {
  const cluster = server.cluster
  const pins = server.clusterPins
  if (cluster !== null && pins !== null) {
    return { connects: cluster.lanes.connects + pins.connects, connectFailures: cluster.lanes.connectFailures + pins.connectFailures }
  }
  return server.pool.counters
}
