import type { UpstreamAddress } from '../config.js'

/**
 * Where respool's upstream connections go. An upstream is a set of nodes that can change; a
 * topology decides which node a new connection goes to and says when the old choice is void.
 *
 * - StandaloneTopology: one configured address (a name resolves again on every connect).
 * - SentinelTopology: the master the sentinels name, verified with ROLE, followed across
 *   failovers.
 *
 * Every change of node starts a new epoch. A connection remembers the epoch it was opened in;
 * when the epoch moves on, the pool closes every older connection before anything else is
 * written, and only connections of the current epoch are lent out.
 */
export interface MasterNode {
  /** The node's address with the data credentials, database and TLS settings. */
  readonly address: UpstreamAddress
  readonly epoch: number
}

/**
 * What the data path saw:
 * - readonly: a reply only a replica gives (-READONLY, -MASTERDOWN);
 * - replica: a new connection's ROLE said replica (or sentinel);
 * - lost: Redis closed an open connection;
 * - unreachable: a connection attempt failed.
 */
export type TopologySignal = 'readonly' | 'replica' | 'lost' | 'unreachable'

export type TopologyListener = (previous: MasterNode | null, next: MasterNode | null, reason: string) => void

export interface Topology {
  readonly kind: 'standalone' | 'sentinel'
  /** The current epoch: connections opened in an older one must not be used. */
  readonly epoch: number
  /** The verified node new connections go to, or null while there is none. */
  readonly master: MasterNode | null
  /** Times respool moved away from a master (failovers followed, re-resolutions). */
  readonly failovers: number
  /** Why there is no verified master (null when there is one). */
  readonly problem: string | null
  /** For logs and errors, never with credentials. */
  describe (): string
  /** First discovery; throws ConfigError when the configuration cannot work (wrong sentinel password). */
  start (): Promise<void>
  /** The verified master, waiting up to timeoutMs for one (NoMasterError after that). */
  waitForMaster (timeoutMs: number, signal?: AbortSignal): Promise<MasterNode>
  /** A sign from the data path about the node of `epoch` (stale epochs are ignored). */
  report (signal: TopologySignal, epoch: number, detail: string): void
  /** A connection of `epoch` completed its handshake with a master. */
  confirmed (epoch: number): void
  /** Called on every change of epoch (next is null while no master is verified). */
  onChange (listener: TopologyListener): void
  close (): void
}

/** host:port, with brackets around an IPv6 literal. */
export function hostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
