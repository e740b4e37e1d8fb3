/**
 * What a client session is given by the server that owns it: configuration, the routers, the
 * pub/sub fan-out and parking lot, the cluster dispatcher, metrics, and the ways back to the
 * server (pause, the list of clients, close). One object shared by all sessions.
 */
import type { RespCommand } from '../protocol/resp-command.js'
import type * as local from '../commands/local-commands.js'
import type { Identities } from '../routing/identities.js'
import type { Router } from '../routing/router.js'
import type { ClientMemoryBudget } from '../ops/client-memory.js'
import type { ProxyStats } from '../ops/proxy-stats.js'
import type { Logger } from '../ops/logger.js'
import type { ProxyConfig } from '../config.js'
import type { ServerInfo } from '../upstream/server-info.js'
import type { ParkingLot } from '../waiting/parking-lot.js'
import type { PubsubHub } from '../pubsub/pubsub-hub.js'
import type { ClusterDispatcher } from '../cluster/cluster-dispatcher.js'
import type { ClusterPins } from '../cluster/cluster-pins.js'
import type { ClusterParking } from '../cluster/cluster-parking.js'
import type { ClusterHub } from '../cluster/cluster-pubsub.js'
import type { ClientSession } from './client-session.js'

/** Answers a RESPOOL command for a session (admin.ts). */
export type AdminHandler = (session: ClientSession, cmd: RespCommand) => Buffer

/** What a session needs from the server that owns it. */
export interface SessionContext {
  config: ProxyConfig
  router: Router
  stats: ProxyStats
  log: Logger
  credentials: local.Credentials
  /** Clients must AUTH before anything is forwarded. */
  authRequired: boolean
  /** Commands refused by policy (lowercase names); replaced on reload. */
  denied: ReadonlySet<string>
  /** Histograms (seconds): command latency through respool, wait for a pin, time a pin is held. */
  observe: {
    commandLatency (seconds: number): void
    pinWait (seconds: number): void
    pinHeld (seconds: number): void
  }
  /** RESPOOL admin commands (null when the family is disabled). */
  admin: AdminHandler | null
  /** Where blocking commands wait without a connection (null: they pin one, as before). */
  parking: ParkingLot | null
  /** Where channel and pattern subscriptions live without a connection each (null: they pin one). */
  pubsub: PubsubHub | null
  /** Cluster mode (--cluster): commands go to the master of their keys' slot (null: one upstream). */
  cluster?: ClusterDispatcher | null
  /** Cluster mode: pinned connections to masters (transactions, blocking commands). */
  clusterPins?: ClusterPins | null
  /** Cluster mode: parked blocking commands (null with --park-blocking no). */
  clusterParking?: ClusterParking | null
  /** Cluster mode: the shared subscriber connection's master, where PUBLISH goes. */
  clusterHub?: ClusterHub | null
  /** While true (RESPOOL PAUSE), sessions hold new commands; they are pumped again on resume. */
  paused (): boolean
  waitForResume (session: ClientSession): void
  serverInfo (): ServerInfo
  /** False until the first upstream connection has told respool what it is. */
  serverInfoKnown (): boolean
  /** CLIENT LIST: every client the proxy serves. */
  clientViews (): local.ClientView[]
  /** Every client the proxy serves (CLIENT KILL, CLIENT UNBLOCK). */
  clients (): Iterable<ClientSession>
  /** One budget for the reply bytes held for all clients. */
  memory: ClientMemoryBudget
  /** Redis ACL users' own routers (AUTH checked by Redis when respool authenticates nobody itself). */
  identities: Identities
  onSessionClosed (session: ClientSession): void
}
