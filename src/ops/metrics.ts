import { pinsTotalByReason, upstreamConnects, upstreamUse } from './upstream-figures.js'
import client from 'prom-client'
import { COMMAND_CLASSES, PIN_REASONS } from './proxy-stats.js'
import type { ProxyServer } from '../proxy-server.js'
import { HotHistogram } from './hot-histogram.js'
import { masterOf } from './admin.js'

/**
 * Prometheus metrics (prom-client) on a registry of respool's own. The hot path only bumps
 * plain numbers in ProxyStats and observes three histograms (HotHistogram: no allocation per observation); gauges and counters are read from
 * the server when scraped.
 */
export class Metrics {
  readonly registry = new client.Registry()
  readonly commandLatency: HotHistogram
  readonly pinWait: HotHistogram
  readonly pinHeld: HotHistogram
  readonly parkWake: HotHistogram

  constructor (server: ProxyServer) {
    const registers = [this.registry]
    const latencyBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    this.commandLatency = new HotHistogram({ name: 'respool_command_duration_seconds', help: 'Time from a command\'s arrival to its reply from Redis, through respool', buckets: latencyBuckets, registers })
    this.pinWait = new HotHistogram({ name: 'respool_pin_wait_seconds', help: 'Time a command waited for a pinned connection', buckets: latencyBuckets, registers })
    this.pinHeld = new HotHistogram({ name: 'respool_pin_duration_seconds', help: 'Time a connection stayed pinned to one client', buckets: [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600], registers })

    this.parkWake = new HotHistogram({ name: 'respool_parked_wake_seconds', help: 'Time from respool learning that a parked command\'s key has data to handing that command its reply', buckets: latencyBuckets, registers })

    const gauge = (name: string, help: string, read: () => number): void => {
      new client.Gauge({ name, help, registers, collect () { this.set(read()) } }) // eslint-disable-line no-new
    }
    // In cluster mode these count the lanes, pins and slot-map fetch, which share --pool-size.
    gauge('respool_pool_connections', 'Upstream connections open or opening (never above the pool size)', () => upstreamUse(server).connections)
    gauge('respool_pool_max_connections', 'The pool size (--pool-size)', () => upstreamUse(server).max)
    gauge('respool_pool_idle_connections', 'Upstream connections open and unused', () => upstreamUse(server).idle)
    gauge('respool_pool_shared_connections', 'Upstream connections carrying multiplexed traffic', () => upstreamUse(server).shared)
    gauge('respool_pool_waiting', 'Requests waiting for an upstream connection (pins and lane growth)', () => {
      const use = upstreamUse(server)
      return use.waitingConnections + use.waitingPins
    })
    gauge('respool_clients', 'Client connections', () => server.clientCount)
    gauge('respool_draining', '1 while respool is shutting down', () => server.draining ? 1 : 0)
    gauge('respool_paused', '1 while commands are held by RESPOOL PAUSE', () => server.paused ? 1 : 0)
    new client.Gauge({ // eslint-disable-line no-new
      name: 'respool_client_output_bytes',
      help: 'Reply bytes respool holds for its clients (not yet taken by their sockets): in total, and for the client holding the most',
      labelNames: ['which'],
      registers,
      collect () {
        const { total, biggestBytes } = server.memory.recount()
        this.set({ which: 'total' }, total)
        this.set({ which: 'biggest_client' }, biggestBytes)
      }
    })
    gauge('respool_client_output_budget_bytes', 'The budget for reply bytes held for all clients (--maxmemory-clients; 0 = none)', () => server.memory.limit)
    gauge('respool_pubsub_subscribers', 'Clients subscribed through the shared subscriber connection', () => server.pubsub?.stats.subscribers ?? 0)
    new client.Gauge({ // eslint-disable-line no-new
      name: 'respool_pubsub_upstream_subscriptions',
      help: 'Channels and patterns the shared subscriber connection holds upstream (the union of the clients\')',
      labelNames: ['kind'],
      registers,
      collect () {
        const stats = server.pubsub?.stats
        this.set({ kind: 'channel' }, stats?.channels ?? 0)
        this.set({ kind: 'pattern' }, stats?.patterns ?? 0)
      }
    })
    gauge('respool_parked_watchers', 'Upstream connections watching the keys of parked blocking commands (one per database and kind of key in use, or one tracking connection for many keys)', () => server.parking?.stats.watchers ?? 0)
    gauge('respool_parked_tracked_keys', 'Keys of parked commands watched through CLIENT TRACKING (used from 256 keys of one database and kind on)', () => server.parking?.tracking.watched ?? 0)
    new client.Gauge({ // eslint-disable-line no-new
      name: 'respool_parked_commands',
      help: 'Blocking commands waiting inside respool without a connection, by command',
      labelNames: ['command'],
      registers,
      collect () {
        this.reset()
        for (const [command, n] of server.parking?.parkedByCommand ?? []) this.set({ command }, n)
      }
    })
    new client.Gauge({ // eslint-disable-line no-new
      name: 'respool_pool_pinned_connections',
      help: 'Upstream connections pinned to one client, by reason (a pin can have several)',
      labelNames: ['reason'],
      registers,
      collect () {
        const counts = server.pinnedByReason()
        PIN_REASONS.forEach((reason, i) => { this.set({ reason }, counts[i]) })
      }
    })

    new client.Gauge({ // eslint-disable-line no-new
      name: 'respool_upstream_master',
      help: 'The master upstream connections go to (1, labelled with its address and how it is found); no series while none is verified',
      labelNames: ['master', 'kind'],
      registers,
      collect () {
        this.reset()
        const master = masterOf(server)
        if (master !== '-') this.set({ master, kind: server.topology.kind }, 1)
      }
    })
    gauge('respool_upstream_master_verified', '1 while a master is known and verified (Sentinel: ROLE said master), 0 while respool looks for one', () => server.topology.master !== null ? 1 : 0)

    // Counters: read plain numbers at scrape time and add what changed since the last scrape.
    const counter = (name: string, help: string, labelName: string | null, read: () => Array<[string, number]>): void => {
      const last = new Map<string, number>()
      new client.Counter({ // eslint-disable-line no-new
        name,
        help,
        labelNames: labelName === null ? [] : [labelName],
        registers,
        collect () {
          for (const [label, value] of read()) {
            const delta = value - (last.get(label) ?? 0)
            if (delta > 0) {
              if (labelName === null) this.inc(delta)
              else this.inc({ [labelName]: label }, delta)
            } else if (labelName !== null && !last.has(label)) {
              this.inc({ [labelName]: label }, 0)
            }
            last.set(label, value)
          }
        }
      })
    }
    const s = server.stats
    counter('respool_client_connections_total', 'Client connections accepted', null, () => [['', s.downstreamCxTotal]])
    counter('respool_commands_total', 'Commands received, by class', 'class', () => COMMAND_CLASSES.map((c, i) => [c, s.downstreamRqByClass[i]]))
    counter('respool_command_errors_total', 'Commands answered with a respool error because the upstream failed, timed out or could not be reached, by kind', 'kind', () => [...s.upstreamRqFailedByCode.entries()].map(([code, n]) => [code.replace(/^RESPOOL_ERR_/, '').toLowerCase(), n]))
    counter('respool_upstream_timeouts_total', 'Upstream connections dropped for not answering within --command-timeout', null, () => [['', s.upstreamRqFailedByCode.get('RESPOOL_ERR_UPSTREAM_TIMEOUT') ?? 0]])
    counter('respool_pins_total', 'Connections pinned, by reason', 'reason', () => {
      const total = pinsTotalByReason(server)
      return PIN_REASONS.map((r, i) => [r, total[i]])
    })
    counter('respool_pin_wait_timeouts_total', 'Commands that gave up waiting for a pinned connection', null, () => [['', server.router.pinWaitTimeouts]])
    counter('respool_protocol_errors_total', 'Clients disconnected for malformed RESP', null, () => [['', s.downstreamCxProtocolError]])
    counter('respool_limit_hits_total', 'Limits reached, by limit', 'limit', () => [
      ['max_clients', s.downstreamCxRefused],
      ['max_pipeline', s.downstreamRqPipelineLimit],
      ['max_output_buffer', s.downstreamCxOutputLimit],
      ['maxmemory_clients', server.memory.evictions]
    ])
    counter('respool_replies_dropped_total', 'Replies read and dropped because their client had gone', null, () => [['', s.upstreamRqCancelled]])
    counter('respool_upstream_failovers_total', 'Times respool closed its connections to a master that was no longer one (Sentinel failovers followed, -READONLY, ROLE replica)', null, () => [['', server.topology.failovers]])
    counter('respool_commands_retried_total', 'Shared-lane commands Redis did not run (refused with -READONLY, -MASTERDOWN or -LOADING, or never written before their connection closed) that were sent again', null, () => [['', s.upstreamRqRetried]])
    counter('respool_upstream_connects_total', 'Upstream connections opened', null, () => [['', upstreamConnects(server).connects]])
    counter('respool_upstream_connect_failures_total', 'Upstream connection attempts that failed', null, () => [['', upstreamConnects(server).connectFailures]])
    counter('respool_pubsub_reconnects_total', 'Times the shared subscriber connection was replaced and the union subscribed again', null, () => [['', server.pubsub?.reconnects ?? 0]])
    counter('respool_parked_total', 'Blocking commands that found nothing at once and waited inside respool', null, () => [['', server.parking?.parkedTotal ?? 0]])
    counter('respool_parked_woken_total', 'Parked blocking commands answered with data', null, () => [['', server.parking?.wokenTotal ?? 0]])
    counter('respool_parked_timeouts_total', 'Parked blocking commands that reached their own timeout', null, () => [['', server.parking?.timedOutTotal ?? 0]])
    counter('respool_parked_tracking_invalidations_total', 'Invalidation messages the key tracker received (a watched key changed)', null, () => [['', server.parking?.tracking.invalidations ?? 0]])
    counter('respool_parked_elements_lost_total', 'Elements a blocking watcher took to learn that a key had data and that may not be back in Redis: the put-back was refused (reason="refused") or the connection died with the outcome unknown (reason="connection_lost"); each is logged with its value', 'reason', () => [['refused', server.parking?.lostTotal ?? 0], ['connection_lost', server.parking?.unknownTotal ?? 0]])
    counter('respool_parked_put_back_total', 'Elements taken for a parked client that had left, put back where they came from', null, () => [['', server.parking?.putBackTotal ?? 0]])
    client.collectDefaultMetrics({ register: this.registry, prefix: 'respool_process_' })
  }
}
