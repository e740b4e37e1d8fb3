import { pinsTotalByReason, upstreamConnects, upstreamUse } from './upstream-figures.js'
import { errorReply, integer, OK, verbatim } from '../protocol/resp-encode.js'
import { PIN_REASONS, COMMAND_CLASSES } from './proxy-stats.js'
import { hostPort } from '../upstream/topology.js'
import { wrongArity } from '../commands/local-commands.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ClientSession } from '../client/client-session.js'
import type { ProxyServer } from '../proxy-server.js'

/**
 * The RESPOOL command family: an operator's console over RESP, in the spirit of pgbouncer's.
 * Reading commands are open unless --admin-password is set; commands that change anything
 * (PAUSE, RESUME, RELOAD, KILL) always need RESPOOL AUTH with that password first.
 */
const HELP = [
  'RESPOOL <subcommand> [<arg> ...]. Subcommands are:',
  'POOLS             -- upstream pool: size, idle, shared lanes, pins by reason, waiters.',
  'CLIENTS           -- every client: id, address, age, db, protocol, upstream, pin reasons, commands in flight (of this worker, with --workers).',
  'STATS             -- counters since start.',
  'AUTH <password>   -- unlock the admin commands for this connection (--admin-password).',
  'PAUSE [ms]        -- hold new commands (in-flight ones finish), e.g. while Redis is swapped; auto-resume after ms. Every worker (--workers).',
  'RESUME            -- release held commands. Every worker.',
  'RELOAD            -- re-read the configuration and apply what can change safely (pool size, limits, log level). Every worker.',
  'KILL CLIENT <id>  -- disconnect one client.',
  'HELP              -- this text.'
]

export function createAdminHandler (server: ProxyServer): (session: ClientSession, cmd: RespCommand) => Buffer {
  const password = server.config.adminPassword
  return (session, cmd) => {
    const sub = cmd.keyword(1)
    const resp = session.state.resp
    const mayRead = password === undefined || session.adminAuthenticated
    const mayWrite = password !== undefined && session.adminAuthenticated
    const locked = (): Buffer => errorReply(password === undefined
      ? 'NOPERM respool: RESPOOL ' + sub.toUpperCase() + ' needs --admin-password on the proxy and RESPOOL AUTH first'
      : 'NOPERM respool: RESPOOL AUTH <admin password> first')
    switch (sub) {
      case 'help':
        return Buffer.concat([Buffer.from(`*${HELP.length}\r\n`), ...HELP.map((line) => Buffer.from(`+${line}\r\n`))])
      case 'auth':
        if (cmd.argc !== 3) return wrongArity('respool|auth')
        if (password === undefined || cmd.argString(2) !== password) return errorReply('WRONGPASS invalid admin password')
        session.adminAuthenticated = true
        return OK
      case 'pools':
        return mayRead ? verbatim(poolsText(server), resp) : locked()
      case 'clients':
        return mayRead ? verbatim(server.sessions().map(clientLine).join(''), resp) : locked()
      case 'stats':
        return mayRead ? verbatim(statsText(server), resp) : locked()
      case 'pause': {
        if (!mayWrite) return locked()
        const ms = cmd.argc > 2 ? Number(cmd.argString(2)) : 0
        if (!Number.isInteger(ms) || ms < 0) return errorReply('ERR timeout is not an integer or out of range')
        server.pause(ms)
        server.peers?.pause(ms)
        return OK
      }
      case 'resume':
        if (!mayWrite) return locked()
        server.resume()
        server.peers?.resume()
        return OK
      case 'reload':
        if (!mayWrite) return locked()
        // Answered at once; the outcome is logged and visible in RESPOOL POOLS / STATS.
        server.reloadFromSource().catch(() => {})
        server.peers?.reload()
        return OK
      case 'kill': {
        if (!mayWrite) return locked()
        if (cmd.argc !== 4 || cmd.keyword(2) !== 'client') return errorReply('ERR syntax error: RESPOOL KILL CLIENT <id>')
        return integer(server.killClient(Number(cmd.argString(3))) ? 1 : 0)
      }
      default:
        return errorReply(`ERR unknown subcommand '${cmd.argc > 1 ? cmd.argString(1) : ''}'. Try RESPOOL HELP.`)
    }
  }
}

function reasonNames (bits: number): string {
  const names = PIN_REASONS.filter((_, i) => (bits & (1 << i)) !== 0)
  return names.length === 0 ? '-' : names.join(',')
}

function clientLine (s: ClientSession): string {
  const age = Math.floor((Date.now() - s.connectedAt) / 1000)
  return `id=${s.id} addr=${s.remoteAddress} age=${age} db=${s.state.db} resp=${s.state.resp} name=${s.state.name} ` +
    `upstream=${s.upstreamId ?? '-'} pinned=${reasonNames(s.pinReasons)} inflight=${s.inflight} pending=${s.pending} parked=${s.parked ? 1 : 0} waiting=${s.waitingFor}\n`
}

function poolsText (server: ProxyServer): string {
  const use = upstreamUse(server)
  const pinned = server.pinnedByReason()
  return [
    '# Pool',
    ...upstreamLines(server),
    `pool_size:${use.max}`,
    `connections:${use.connections}`,
    `idle:${use.idle}`,
    `shared:${use.shared}`,
    `pinned:${use.pinned}`,
    `max_pins:${use.maxPins}`,
    ...PIN_REASONS.map((r, i) => `pinned_${r}:${pinned[i]}`),
    `waiting_pins:${use.waitingPins}`,
    `waiting_connections:${use.waitingConnections}`,
    ...parkedLines(server),
    `acl_users:${server.identities.users.length}`,
    `acl_connections:${server.identities.connections}`,
    ...pubsubLines(server),
    `paused:${server.paused ? 1 : 0}`,
    `draining:${server.draining ? 1 : 0}`,
    ''
  ].join('\r\n')
}

/** Where respool sends commands: one Redis or the master sentinels name, or a cluster's masters. */
function upstreamLines (server: ProxyServer): string[] {
  const cluster = server.cluster
  if (cluster !== null) {
    const topology = cluster.topology
    return [
      `upstream:${topology.describe()}`,
      'upstream_kind:cluster',
      `cluster_masters:${[...topology.masters.keys()].join(',') || '-'}`,
      `cluster_slot_map:${topology.problem === null ? 'ok' : topology.problem}`,
      `cluster_slot_map_fetches:${topology.refreshes}`
    ]
  }
  return [
    `upstream:${server.topology.describe()}`,
    `upstream_kind:${server.topology.kind}`,
    `upstream_master:${masterOf(server)}`,
    `upstream_epoch:${server.topology.epoch}`,
    `upstream_failovers:${server.topology.failovers}`
  ]
}

/** host:port of the verified master, or "-" while there is none. */
export function masterOf (server: ProxyServer): string {
  const master = server.topology.master
  if (master === null) return '-'
  return master.address.path !== undefined ? `unix:${master.address.path}` : hostPort(master.address.host, master.address.port)
}

/** Parked blocking commands: how many wait, on how many watcher connections, and by command. */
function parkedLines (server: ProxyServer): string[] {
  const parking = server.parking
  if (parking === null) return ['parked:0', 'parked_watchers:0']
  const stats = parking.stats
  return [
    `parked:${stats.parked}`,
    `parked_watchers:${stats.watchers}`,
    `parked_tracking:${parking.tracking.state}`,
    `parked_tracked_keys:${parking.tracking.watched}`,
    ...[...parking.parkedByCommand].map(([name, n]) => `parked_${name}:${n}`)
  ]
}

/** The shared pub/sub fan-out: subscribed clients, topics, and its connection. */
function pubsubLines (server: ProxyServer): string[] {
  const stats = server.pubsub?.stats
  if (stats === undefined) return []
  return [
    `pubsub_subscribers:${stats.subscribers}`,
    `pubsub_channels:${stats.channels}`,
    `pubsub_patterns:${stats.patterns}`,
    `pubsub_connections:${stats.connections}`,
    `pubsub_reconnects:${stats.reconnects}`
  ]
}

function statsText (server: ProxyServer): string {
  const s = server.stats
  return [
    '# Stats',
    `clients:${server.clientCount}`,
    `client_connections_total:${s.downstreamCxTotal}`,
    `commands_total:${s.downstreamRqTotal}`,
    ...COMMAND_CLASSES.map((c, i) => `commands_${c}:${s.downstreamRqByClass[i]}`),
    `command_errors_total:${s.upstreamRqFailed}`,
    ...[...s.upstreamRqFailedByCode.entries()].map(([code, n]) => `errors_${code.replace(/^RESPOOL_ERR_/, '').toLowerCase()}:${n}`),
    `replies_dropped_total:${s.upstreamRqCancelled}`,
    `protocol_errors_total:${s.downstreamCxProtocolError}`,
    `max_clients_refused_total:${s.downstreamCxRefused}`,
    `max_pipeline_pauses_total:${s.downstreamRqPipelineLimit}`,
    `max_output_buffer_disconnects_total:${s.downstreamCxOutputLimit}`,
    `maxmemory_clients_disconnects_total:${server.memory.evictions}`,
    `client_output_bytes:${server.memory.recount().total}`,
    ...pinsTotalByReason(server).map((n, i) => `pins_${PIN_REASONS[i]}_total:${n}`),
    `pin_wait_timeouts_total:${server.router.pinWaitTimeouts}`,
    ...histogramLines('pin_wait_seconds', server.metrics.pinWait.snapshot()),
    `parked_total:${server.parking?.parkedTotal ?? 0}`,
    `parked_woken_total:${server.parking?.wokenTotal ?? 0}`,
    `parked_timeouts_total:${server.parking?.timedOutTotal ?? 0}`,
    `parked_put_back_total:${server.parking?.putBackTotal ?? 0}`,
    `commands_retried_total:${s.upstreamRqRetried}`,
    `upstream_connects_total:${upstreamConnects(server).connects}`,
    `upstream_connect_failures_total:${upstreamConnects(server).connectFailures}`,
    ''
  ].join('\r\n')
}

/** A histogram as counter lines: cumulative `<name>_le_<bound>` per bucket, then `_count` and `_sum`. */
function histogramLines (name: string, h: { bounds: number[], counts: number[], sum: number, count: number }): string[] {
  let cumulative = 0
  return [
    ...h.bounds.map((bound, i) => `${name}_le_${bound}:${(cumulative += h.counts[i])}`),
    `${name}_count:${h.count}`,
    `${name}_sum:${h.sum}`
  ]
}
