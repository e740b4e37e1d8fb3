import { randomBytes } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { createProxy } from '../proxy-server.js'
import type { ProxyServer } from '../proxy-server.js'
import { describeUpstream, parseUpstreamUrl, type UpstreamAddress } from '../config.js'
import { bucketDelta, bucketQuantile, LatencyHistogram } from './histogram.js'
import { LoadWorker } from './load-worker.js'
import { waiterCount, type LoadSpec, type LoadWindow } from './load.js'
import { recommendPoolSize, type Recommendation } from './decide.js'
import { parseEndpoint, parseInfo, ReplyError, RespConnection, type Reply } from './resp.js'

export interface BenchOptions {
  /** The Redis to measure against (in-process mode), or to read INFO/DBSIZE from (--target mode). */
  upstream?: string
  /** A running respool (host:port or redis:// URL): measured as it is, no proxy of our own. */
  target?: string
  clients: number[]
  poolSizes: number[]
  durationSec: number
  warmupSec: number
  pipeline: number
  getRatio: number
  valueSize: number
  multiShare: number
  txStyle: 'watch' | 'pipelined'
  blockingShare: number
  keys: number
  maxOps: number
  targetP99Ms?: number
  /** Run although the database holds other keys. */
  yes: boolean
}

export interface CellResult {
  poolSize: number
  clients: number
  /** Of `clients`, how many were blocking waiters. */
  waiters: number
  durationSec: number
  ops: number
  opsPerSec: number
  commandsPerSec: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  /** p99 of respool's wait for a pinned connection in this cell (null: not readable from a --target). */
  poolWaitP99Ms: number | null
  poolWaits: number | null
  /** Most requests seen waiting for an upstream connection or pin at one time (sampled every 100 ms). */
  poolWaitingMax: number | null
  /** Most upstream connections seen on Redis during the cell, the benchmark's own left out. */
  upstreamConnections: number | null
  errors: number
  firstError: string | null
  txAborted: number
  wakes: number
  blockTimeouts: number
}

export interface BenchResult {
  mode: 'in-process' | 'target'
  upstream: string | null
  target: string | null
  prefix: string
  settings: Omit<BenchOptions, 'upstream' | 'target' | 'yes'>
  cells: CellResult[]
  recommendation: Recommendation
  startedAt: string
  finishedAt: string
  cleanup: { deleted: number, left: number }
}

export interface BenchHooks {
  signal?: AbortSignal
  onCellStart?: (index: number, total: number, cell: { poolSize: number, clients: number }) => void
  onCellDone?: (cell: CellResult) => void
  /** Called with the key prefix as soon as the run may write (so an interrupted run can say what it removed). */
  onPrefix?: (prefix: string) => void
}

/** The run was refused before anything was written (e.g. the database holds other keys). */
export class BenchRefused extends Error {}

export const DEFAULT_UPSTREAM = 'redis://127.0.0.1:6379'

/** Where the numbers about respool come from: the in-process proxy itself, or RESPOOL commands. */
interface RespoolProbe {
  pinWait (): Promise<{ bounds: number[], counts: number[] } | null>
  waiting (): Promise<number | null>
  close (): Promise<void>
}

export async function runBench (options: BenchOptions, hooks: BenchHooks = {}): Promise<BenchResult> {
  const startedAt = new Date().toISOString()
  const signal = hooks.signal
  const inProcess = options.target === undefined
  const upstreamUrl = options.upstream ?? (inProcess ? DEFAULT_UPSTREAM : undefined)
  const upstream = upstreamUrl !== undefined ? parseUpstreamUrl(upstreamUrl) : null
  const target = options.target !== undefined ? parseEndpoint(options.target, parseUpstreamUrl) : null
  const adminEndpoint = (upstream ?? target) as UpstreamAddress
  const adminIsDirect = upstream !== null
  const prefix = `respool-bench:${randomBytes(4).toString('hex')}:`

  const admin = await RespConnection.open(adminEndpoint)
  let worker: LoadWorker | null = null
  let proxy: ProxyServer | null = null
  let probe: RespoolProbe | null = null
  let wrote = false
  try {
    const size = await admin.call('DBSIZE')
    if (size instanceof ReplyError) throw new Error(`DBSIZE: ${size.message}`)
    if (typeof size === 'number' && size > 0 && !options.yes) {
      throw new BenchRefused(`database ${adminEndpoint.db} of ${describeUpstream(adminEndpoint)} holds ${size} key${size === 1 ? '' : 's'}. ` +
        'respool bench writes only keys under its own prefix and deletes them afterwards, but it loads the server; ' +
        'point it at an empty database (e.g. redis://host:6379/15) or pass --yes to run anyway')
    }
    hooks.onPrefix?.(prefix)
    wrote = true
    await populate(admin, prefix, options)
    // Upstream connections of a cell: in-process, all beyond those before the proxy started
    // (the benchmark's own among them); for a --target, all but the benchmark's own connection
    // (none when INFO goes through the target).
    const baseline = inProcess ? await connectedClients(admin) : adminIsDirect ? 1 : 0
    const pools = inProcess ? options.poolSizes : [await targetPoolSize(target as UpstreamAddress)]
    const total = pools.length * options.clients.length
    const cells: CellResult[] = []
    worker = new LoadWorker()
    let index = 0
    for (const poolSize of pools) {
      let loadEndpoint: UpstreamAddress
      if (inProcess) {
        proxy = await createProxy({ host: '127.0.0.1', port: 0, upstream: upstreamUrl, poolSize, logLevel: 'silent' })
        loadEndpoint = { host: '127.0.0.1', port: proxy.address.port, tls: false, db: 0 }
        probe = inProcessProbe(proxy)
      } else {
        loadEndpoint = target as UpstreamAddress
        probe = await targetProbe(target as UpstreamAddress)
      }
      for (const clients of options.clients) {
        signal?.throwIfAborted()
        hooks.onCellStart?.(index++, total, { poolSize, clients })
        const spec: LoadSpec = {
          endpoint: loadEndpoint,
          clients,
          pipeline: options.pipeline,
          getRatio: options.getRatio,
          multiShare: options.multiShare,
          txStyle: options.txStyle,
          blockingShare: options.blockingShare,
          blockTimeoutSec: 1,
          valueSize: options.valueSize,
          keys: options.keys,
          prefix,
          maxOps: options.maxOps
        }
        const cell = await runCell(worker, spec, poolSize, probe, admin, baseline, options, signal)
        cells.push(cell)
        hooks.onCellDone?.(cell)
      }
      await probe.close()
      probe = null
      if (proxy !== null) {
        await proxy.destroy()
        proxy = null
      }
    }
    await worker.terminate()
    worker = null
    const recommendation = recommendPoolSize(cells, { targetP99Ms: options.targetP99Ms })
    const cleanup = await removeKeys(admin, prefix)
    wrote = false
    const { upstream: _u, target: _t, yes: _y, ...settings } = options
    return {
      mode: inProcess ? 'in-process' : 'target',
      upstream: upstream !== null ? describeUpstream(upstream) : null,
      target: target !== null ? describeUpstream(target) : null,
      prefix,
      settings,
      cells,
      recommendation,
      startedAt,
      finishedAt: new Date().toISOString(),
      cleanup
    }
  } finally {
    // Stop the load first (its sockets close with the worker), then the proxy, then delete
    // what was written: nothing of ours may still be on its way when the keys are scanned.
    if (worker !== null) await worker.terminate().catch(() => {})
    if (probe !== null) await probe.close().catch(() => {})
    if (proxy !== null) await proxy.destroy().catch(() => {})
    if (wrote) await removeKeys(admin, prefix).catch(() => {})
    await admin.close().catch(() => { admin.destroy() })
  }
}

async function runCell (worker: LoadWorker, spec: LoadSpec, poolSize: number, probe: RespoolProbe, admin: RespConnection,
  baseline: number, options: BenchOptions, signal: AbortSignal | undefined): Promise<CellResult> {
  await worker.start(spec)
  try {
    await delay(options.warmupSec * 1000, undefined, { signal })
    const pinBefore = await probe.pinWait()
    await worker.mark()
    const endAt = performance.now() + options.durationSec * 1000
    let waitingMax: number | null = null
    let connectionsMax: number | null = null
    // Sampled every 100 ms: the most requests waiting, the most upstream connections.
    while (performance.now() < endAt) {
      const [waiting, connections] = await Promise.all([probe.waiting(), connectedClients(admin)])
      if (waiting !== null) waitingMax = Math.max(waitingMax ?? 0, waiting)
      connectionsMax = Math.max(connectionsMax ?? 0, connections)
      await delay(Math.max(0, Math.min(100, endAt - performance.now())), undefined, { signal })
    }
    const window = await worker.collect()
    const pinAfter = await probe.pinWait()
    return cellResult(spec, poolSize, window, pinBefore, pinAfter, waitingMax,
      connectionsMax !== null ? Math.max(0, connectionsMax - baseline) : null)
  } finally {
    if (!(signal?.aborted ?? false)) await worker.stop()
  }
}

/** One cell's numbers from the load generator's window and respool's pin-wait histogram. */
export function cellResult (spec: LoadSpec, poolSize: number, window: LoadWindow,
  pinBefore: { bounds: number[], counts: number[] } | null, pinAfter: { bounds: number[], counts: number[] } | null,
  waitingMax: number | null, upstreamConnections: number | null): CellResult {
  const histogram = new LatencyHistogram(window.latency.counts)
  histogram.maxMs = window.latency.maxMs
  const seconds = window.elapsedMs / 1000
  let poolWaitP99Ms: number | null = null
  let poolWaits: number | null = null
  if (pinBefore !== null && pinAfter !== null) {
    const delta = bucketDelta(pinBefore.counts, pinAfter.counts)
    poolWaits = delta.reduce((a, b) => a + b, 0)
    poolWaitP99Ms = bucketQuantile(pinAfter.bounds, delta, 0.99) * 1000
  }
  return {
    poolSize,
    clients: spec.clients,
    waiters: waiterCount(spec),
    durationSec: round(seconds, 3),
    ops: window.ops,
    opsPerSec: round(window.ops / seconds, 1),
    commandsPerSec: round(window.commands / seconds, 1),
    p50Ms: round(histogram.quantile(0.5), 3),
    p99Ms: round(histogram.quantile(0.99), 3),
    maxMs: round(window.latency.maxMs, 3),
    poolWaitP99Ms: poolWaitP99Ms === null ? null : round(poolWaitP99Ms, 3),
    poolWaits,
    poolWaitingMax: waitingMax,
    upstreamConnections,
    errors: window.errors,
    firstError: window.firstError,
    txAborted: window.txAborted,
    wakes: window.wakes,
    blockTimeouts: window.blockTimeouts
  }
}

function round (value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** The GET/SET keys, written once so GETs find a value of --value-size. */
async function populate (admin: RespConnection, prefix: string, options: BenchOptions): Promise<void> {
  const value = Buffer.alloc(options.valueSize, 'x')
  for (let start = 0; start < options.keys; start += 200) {
    const batch: Array<Array<string | Buffer>> = []
    for (let i = start; i < Math.min(options.keys, start + 200); i++) batch.push(['SET', `${prefix}k:${i}`, value])
    for (const reply of await admin.pipeline(batch)) {
      if (reply instanceof ReplyError) throw new Error(`SET: ${reply.message}`)
    }
  }
}

/** Deletes every key under the prefix (SCAN MATCH + UNLINK), twice a moment apart, and counts what is left. */
export async function removeKeys (conn: RespConnection, prefix: string): Promise<{ deleted: number, left: number }> {
  let deleted = 0
  for (let pass = 0; pass < 2; pass++) {
    if (pass > 0) await delay(150)
    await scanKeys(conn, prefix, async (keys) => {
      const reply = await conn.call('UNLINK', ...keys)
      if (typeof reply === 'number') deleted += reply
    })
  }
  let left = 0
  await scanKeys(conn, prefix, async (keys) => { left += keys.length })
  return { deleted, left }
}

async function scanKeys (conn: RespConnection, prefix: string, each: (keys: string[]) => Promise<void>): Promise<void> {
  let cursor = '0'
  do {
    const reply = await conn.call('SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000')
    if (!Array.isArray(reply) || reply.length !== 2) throw new Error(`SCAN: ${reply instanceof ReplyError ? reply.message : 'unexpected reply'}`)
    cursor = String(reply[0])
    const keys = (reply[1] as Reply[]).map(String)
    if (keys.length > 0) await each(keys)
  } while (cursor !== '0')
}

async function connectedClients (conn: RespConnection): Promise<number> {
  const reply = await conn.call('INFO', 'clients')
  if (typeof reply !== 'string') return 0
  return Number(parseInfo(reply).get('connected_clients') ?? 0)
}

function inProcessProbe (proxy: ProxyServer): RespoolProbe {
  return {
    pinWait: async () => proxy.metrics.pinWait.snapshot(),
    waiting: async () => proxy.pool.stats.waiting + proxy.router.pinsWaiting,
    close: async () => {}
  }
}

async function targetPoolSize (target: UpstreamAddress): Promise<number> {
  const conn = await RespConnection.open(target)
  try {
    const reply = await conn.call('RESPOOL', 'POOLS')
    if (typeof reply !== 'string') throw new BenchRefused(`${describeUpstream(target)} did not answer RESPOOL POOLS (${reply instanceof ReplyError ? reply.message : 'unexpected reply'}); --target must be a respool`)
    return Number(parseInfo(stripVerbatim(reply)).get('pool_size'))
  } finally {
    await conn.close()
  }
}

/** RESPOOL POOLS for the waiters, RESPOOL STATS for the pin-wait histogram (respool versions without it give null). */
async function targetProbe (target: UpstreamAddress): Promise<RespoolProbe> {
  const conn = await RespConnection.open(target)
  const read = async (what: string): Promise<Map<string, string> | null> => {
    const reply = await conn.call('RESPOOL', what)
    return typeof reply === 'string' ? parseInfo(stripVerbatim(reply)) : null
  }
  return {
    pinWait: async () => {
      const stats = await read('STATS')
      if (stats === null) return null
      const bounds: number[] = []
      const cumulative: number[] = []
      for (const [name, value] of stats) {
        const m = /^pin_wait_seconds_le_(.+)$/.exec(name)
        if (m !== null) { bounds.push(Number(m[1])); cumulative.push(Number(value)) }
      }
      if (bounds.length === 0) return null
      const count = Number(stats.get('pin_wait_seconds_count') ?? cumulative[cumulative.length - 1])
      const counts = cumulative.map((n, i) => n - (i === 0 ? 0 : cumulative[i - 1]))
      counts.push(count - cumulative[cumulative.length - 1])
      return { bounds, counts }
    },
    waiting: async () => {
      const pools = await read('POOLS')
      if (pools === null) return null
      return Number(pools.get('waiting_pins') ?? 0) + Number(pools.get('waiting_connections') ?? 0)
    },
    close: async () => { await conn.close() }
  }
}

/** A RESP3 verbatim string arrives as "txt:…" from some parsers; RESP2 bulk text as is. */
function stripVerbatim (text: string): string {
  return text.startsWith('txt:') ? text.slice(4) : text
}
