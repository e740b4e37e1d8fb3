/**
 * The cluster scenario: a 3-master Redis Cluster (no replicas) on this machine, driven
 *
 * - through respool (`--cluster`), by ioredis in non-cluster mode, and
 * - directly, by ioredis's Cluster client (the "direct" baseline: what an application would do
 *   without respool),
 *
 * with one load generator (workers/cluster-load.ts: the same library, clients, pipeline depth,
 * command mix) at -P 1 and -P 16, plus redis-benchmark against respool and `redis-benchmark
 * --cluster` against the cluster as a second pair. Rounds interleaved with the target order
 * rotated; medians of rounds. During each run the connections every node holds are counted
 * (CLIENT LIST). Then a resharding under load: `redis-cli --cluster reshard` moves slots with
 * their keys between two masters while the load runs; errors and p99 before, during and after.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import {
  WORKERS_DIR, median, parseCsv, progress, redisBenchmark, rotated, startRedis, startRespool, stopChild, track, type Server
} from './harness.js'
import type { Table } from './table.js'

export interface ClusterBenchConfig {
  rounds: number
  clients: number
  depths: number[]
  /** Seconds measured per load-generator run (after a one-second warm-up). */
  seconds: number
  keyspace: number
  /** redis-benchmark requests per run at -P 1 (× depth at deeper pipelines). */
  benchRequests: number
  reshardSlots: number
}

export function clusterBenchConfig (env: NodeJS.ProcessEnv, quick: boolean): ClusterBenchConfig {
  const int = (v: string | undefined, dflt: number): number => v !== undefined && /^\d+$/.test(v) ? Number(v) : dflt
  return {
    rounds: int(env.CLUSTER_ROUNDS, quick ? 1 : 3),
    clients: int(env.CLUSTER_CLIENTS, 50),
    depths: (env.CLUSTER_DEPTHS ?? '1,16').split(',').map(Number),
    seconds: int(env.CLUSTER_SECONDS, quick ? 2 : 4),
    keyspace: int(env.CLUSTER_KEYSPACE, 100_000),
    benchRequests: int(env.CLUSTER_BENCH_REQUESTS, quick ? 50_000 : 100_000),
    reshardSlots: int(env.CLUSTER_RESHARD_SLOTS, 1000)
  }
}

interface TestCluster {
  nodes: Array<Server & { id: string, admin: Redis }>
  seeds: string[]
  stop: () => Promise<void>
}

async function startCluster (): Promise<TestCluster> {
  const servers = await Promise.all([0, 1, 2].map(async () => await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'])))
  const nodes = await Promise.all(servers.map(async (s) => {
    const admin = new Redis({ port: s.port, host: '127.0.0.1', connectionName: 'bench-admin' })
    return Object.assign(s, { id: String(await admin.call('CLUSTER', 'MYID')), admin })
  }))
  const seeds = nodes.map((n) => `127.0.0.1:${n.port}`)
  const created = await run('redis-cli', ['--cluster', 'create', ...seeds, '--cluster-replicas', '0', '--cluster-yes'], 30_000)
  if (created.code !== 0) throw new Error(`redis-cli --cluster create failed: ${created.out.slice(-500)}`)
  for (let i = 0; ; i++) {
    const ok = await Promise.all(nodes.map(async (n) => /cluster_state:ok/.test(String(await n.admin.call('CLUSTER', 'INFO')))))
    if (ok.every(Boolean)) break
    if (i > 200) throw new Error('the cluster did not become ready')
    await delay(50)
  }
  return {
    nodes,
    seeds,
    async stop () {
      for (const n of nodes) n.admin.disconnect()
      await Promise.all(nodes.map(async (n) => { await n.stop() }))
    }
  }
}

/** Waits until every node reports cluster_state:ok and the same slot map covering all 16384 slots (redis-cli refuses to reshard before). */
async function settled (cluster: TestCluster): Promise<void> {
  for (let i = 0; ; i++) {
    const views = await Promise.all(cluster.nodes.map(async (n) => {
      const ok = /cluster_state:ok/.test(String(await n.admin.call('CLUSTER', 'INFO')))
      const ranges = await n.admin.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
      const covered = ranges.reduce((a, [start, end]) => a + Number(end) - Number(start) + 1, 0)
      return ok && covered === 16384 ? ranges.map(([start, end, m]) => `${start}-${end}:${m[1]}`).sort().join(',') : null
    }))
    if (views.every((v) => v !== null && v === views[0])) return
    if (i > 400) throw new Error('the cluster\'s nodes do not agree on the slot map')
    await delay(50)
  }
}

async function run (cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null, out: string }> {
  const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  const [code] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  return { code, out }
}

/**
 * Client connections each node holds now for `target`: respool's (named `respool`), or, for the
 * direct side, everyone else's (respool's idle lanes stay open meanwhile and are not counted);
 * never the benchmark's own admin connection.
 */
async function connectionsPerNode (cluster: TestCluster, target: Target): Promise<number[]> {
  return await Promise.all(cluster.nodes.map(async (n) => {
    const list = String(await n.admin.call('CLIENT', 'LIST', 'TYPE', 'normal'))
    return list.split('\n').filter((l) => l.trim() !== '' && !/ name=bench-admin /.test(l) && / name=respool /.test(l) === (target === 'respool')).length
  }))
}

interface SegmentResult {
  name: string
  seconds: number
  commands: number
  rps: number
  p50Us: number
  p99Us: number
  maxUs: number
  errors: Record<string, number>
}

/** A load-generator child process. */
class Load {
  readonly child: ChildProcess
  #out = ''
  #err = ''
  constructor (config: Record<string, unknown>) {
    this.child = track(spawn(process.execPath, [join(WORKERS_DIR, 'cluster-load.js'), JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] }))
    this.child.stdout?.on('data', (d: Buffer) => { this.#out += d.toString() })
    this.child.stderr?.on('data', (d: Buffer) => { this.#err += d.toString() })
  }

  async ready (): Promise<void> {
    for (let i = 0; !this.#out.includes('READY\n'); i++) {
      if (this.child.exitCode !== null || i > 3000) throw new Error(`the load generator did not start: ${this.#err.slice(-500)}`)
      await delay(10)
    }
  }

  mark (name: string): void {
    this.child.stdin?.write(`mark ${name}\n`)
  }

  async stop (): Promise<SegmentResult[]> {
    this.child.stdin?.write('stop\n')
    for (let i = 0; !/DONE .*\n/.test(this.#out); i++) {
      if (this.child.exitCode !== null && !/DONE .*\n/.test(this.#out)) throw new Error(`the load generator failed: ${this.#err.slice(-500)}`)
      if (i > 3000) {
        await stopChild(this.child)
        throw new Error('the load generator did not stop')
      }
      await delay(10)
    }
    const line = /DONE (.*)\n/.exec(this.#out)?.[1] ?? '{}'
    return (JSON.parse(line) as { segments: SegmentResult[] }).segments
  }
}

type Target = 'respool' | 'ioredis-cluster'

interface RunRow {
  tool: 'load generator' | 'redis-benchmark'
  target: Target
  depth: number
  round: number
  rps: number
  p50Ms: number
  p99Ms: number
  errors: number
  connections: number[]
}

const ms = (us: number): number => us / 1000
const sumErrors = (e: Record<string, number>): number => Object.values(e).reduce((a, b) => a + b, 0)

export interface ClusterBenchReport {
  tables: Table[]
  anomalies: Array<{ target: string, message: string, scenario?: string }>
  rows: RunRow[]
  reshards: Array<{ target: Target, round: number, tookMs: number, segments: SegmentResult[] }>
}

export async function scenarioCluster (cfg: ClusterBenchConfig): Promise<ClusterBenchReport> {
  const cluster = await startCluster()
  const respool = await startRespool(cluster.nodes[0].port, { poolSize: 8, extra: ['--cluster', cluster.seeds.join(',')] })
  const anomalies: ClusterBenchReport['anomalies'] = []
  const rows: RunRow[] = []
  const reshards: ClusterBenchReport['reshards'] = []
  try {
    progress(`cluster on ${cluster.seeds.join(' ')}, respool on ${respool.port}; preloading ${cfg.keyspace} keys`)
    const preload = new Redis({ port: respool.port, host: '127.0.0.1' })
    for (let i = 0; i < cfg.keyspace; i += 1000) {
      await preload.mset(...Array.from({ length: Math.min(1000, cfg.keyspace - i) }, (_, k) => [`key:${i + k}`, 'xxx']).flat())
    }
    preload.disconnect()
    const targets: Target[] = ['respool', 'ioredis-cluster']
    for (let round = 0; round < cfg.rounds; round++) {
      for (const [d, depth] of cfg.depths.entries()) {
        for (const target of rotated(targets, round + d)) {
          const load = new Load(loadConfig(target, cfg, depth, respool.port, cluster.seeds))
          await load.ready()
          await delay(1000)
          load.mark('measure')
          await delay(cfg.seconds * 500)
          const connections = await connectionsPerNode(cluster, target)
          await delay(cfg.seconds * 500)
          const [seg] = await load.stop()
          rows.push({ tool: 'load generator', target, depth, round, rps: seg.rps, p50Ms: ms(seg.p50Us), p99Ms: ms(seg.p99Us), errors: sumErrors(seg.errors), connections })
          if (sumErrors(seg.errors) > 0) anomalies.push({ target, scenario: `-P ${depth}`, message: JSON.stringify(seg.errors) })
          progress(`round ${round + 1} -P ${depth} ${target}: ${Math.round(seg.rps)} commands/s, p99 ${ms(seg.p99Us).toFixed(2)} ms, connections ${connections.join('+')}`)
        }
        for (const target of rotated(targets, round + d)) {
          const requests = cfg.benchRequests * depth
          const args = { clients: cfg.clients, pipeline: depth, requests, tests: ['set', 'get'], keyspace: cfg.keyspace }
          const bench = target === 'respool'
            ? redisBenchmark(respool.port, args, respool.pid, 120_000)
            : redisBenchmarkCluster(cluster.nodes[0].port, args)
          await delay(300)
          const connections = await connectionsPerNode(cluster, target)
          const result = await bench
          for (const note of result.notes) anomalies.push({ target, scenario: `redis-benchmark -P ${depth}`, message: note })
          const set = result.lines.get('SET')
          const get = result.lines.get('GET')
          if (set === undefined || get === undefined) continue
          rows.push({ tool: 'redis-benchmark', target, depth, round, rps: (set.rps + get.rps) / 2, p50Ms: Math.max(set.p50Ms, get.p50Ms), p99Ms: Math.max(set.p99Ms, get.p99Ms), errors: 0, connections })
          progress(`round ${round + 1} redis-benchmark -P ${depth} ${target}: SET ${Math.round(set.rps)}/s GET ${Math.round(get.rps)}/s`)
        }
      }
      for (const target of rotated(targets, round)) {
        const result = await reshardUnderLoad(target, cfg, respool.port, cluster, round)
        reshards.push(result)
        for (const seg of result.segments) {
          if (sumErrors(seg.errors) > 0) anomalies.push({ target, scenario: `resharding, ${seg.name}`, message: JSON.stringify(seg.errors) })
        }
      }
    }
  } finally {
    await respool.stop()
    await cluster.stop()
  }
  return { tables: tables(cfg, rows, reshards), anomalies, rows, reshards }
}

function loadConfig (target: Target, cfg: ClusterBenchConfig, depth: number, respoolPort: number, seeds: string[]): Record<string, unknown> {
  return target === 'respool'
    ? { target: 'respool', port: respoolPort, clients: cfg.clients, depth, keyspace: cfg.keyspace }
    : { target: 'cluster', seeds, clients: cfg.clients, depth, keyspace: cfg.keyspace }
}

/** redis-benchmark --cluster against the cluster itself. */
async function redisBenchmarkCluster (port: number, a: { clients: number, pipeline: number, requests: number, tests: string[], keyspace: number }): Promise<Awaited<ReturnType<typeof redisBenchmark>>> {
  const t0 = performance.now()
  const r = await run('redis-benchmark', ['--cluster', '-h', '127.0.0.1', '-p', String(port), '-c', String(a.clients), '-P', String(a.pipeline), '-n', String(a.requests),
    '-r', String(a.keyspace), '-d', '3', '-t', a.tests.join(','), '--csv'], 120_000)
  const { lines, notes } = parseCsv(r.out)
  return { lines, notes: notes.filter((n) => !/^Cluster has|^Master \d|^\d+ slots|^$/.test(n)), wallMs: performance.now() - t0, cpu: null, timedOut: false, exitCode: r.code }
}

/** Reshardings so far: the direction alternates, so the slot map swings back and forth. */
let reshardRuns = 0

/**
 * The load at -P 1 for a while, then `redis-cli --cluster reshard` of `reshardSlots` slots (and
 * their keys) from the first master to the second (back again in odd rounds), then a while more.
 */
async function reshardUnderLoad (target: Target, cfg: ClusterBenchConfig, respoolPort: number, cluster: TestCluster, round: number): Promise<ClusterBenchReport['reshards'][number]> {
  const load = new Load(loadConfig(target, cfg, 1, respoolPort, cluster.seeds))
  await load.ready()
  await delay(1000)
  load.mark('before')
  await delay(2000)
  await settled(cluster)
  const [a, b] = cluster.nodes
  const [from, to] = (reshardRuns++ % 2 === 0) ? [a, b] : [b, a]
  load.mark('during')
  const t0 = performance.now()
  const r = await run('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${from.port}`, '--cluster-from', from.id, '--cluster-to', to.id,
    '--cluster-slots', String(cfg.reshardSlots), '--cluster-yes', '--cluster-pipeline', '100'], 120_000)
  const tookMs = performance.now() - t0
  load.mark('after')
  await Promise.all([delay(2000), settled(cluster)])
  const segments = await load.stop()
  if (r.code !== 0) throw new Error(`redis-cli --cluster reshard failed: ${r.out.slice(-500)}`)
  progress(`resharding ${cfg.reshardSlots} slots under load, ${target}: ${Math.round(tookMs)} ms; ${segments.map((s) => `${s.name} p99 ${ms(s.p99Us).toFixed(2)} ms, ${sumErrors(s.errors)} errors`).join('; ')}`)
  return { target, round, tookMs, segments }
}

function tables (cfg: ClusterBenchConfig, rows: RunRow[], runs: ClusterBenchReport['reshards']): Table[] {
  const out: Table[] = []
  const fmtK = (x: number): string => Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–'
  const fmtMs = (x: number): string => Number.isFinite(x) ? x.toFixed(2) : '–'
  for (const tool of ['load generator', 'redis-benchmark'] as const) {
    const body: string[][] = []
    for (const depth of cfg.depths) {
      const cell = (target: Target): RunRow[] => rows.filter((r) => r.tool === tool && r.depth === depth && r.target === target)
      const direct = median(cell('ioredis-cluster').map((r) => r.rps))
      for (const target of ['ioredis-cluster', 'respool'] as const) {
        const rs = cell(target)
        if (rs.length === 0) continue
        const rps = median(rs.map((r) => r.rps))
        const conns = rs[0].connections
        body.push([`-P ${depth}`, target === 'respool' ? 'respool → cluster' : tool === 'redis-benchmark' ? 'redis-benchmark --cluster (direct)' : 'ioredis Cluster (direct)',
          fmtK(rps), target === 'respool' ? `${Math.round(100 * rps / direct)} %` : '100 %', fmtMs(median(rs.map((r) => r.p50Ms))), fmtMs(median(rs.map((r) => r.p99Ms))),
          String(rs.reduce((a, r) => a + r.errors, 0)), `${conns.reduce((a, b) => a + b, 0)} (${conns.join('+')})`])
      }
    }
    out.push({
      title: tool === 'load generator'
        ? `Cluster (3 masters): ${cfg.clients} clients, SET/GET of random keys (ioredis load generator), median of ${cfg.rounds} round(s)`
        : `Cluster (3 masters): redis-benchmark -c ${cfg.clients} -t set,get -r ${cfg.keyspace}, median of ${cfg.rounds} round(s)`,
      headers: ['pipeline', 'target', 'commands/s', 'vs direct', 'p50 ms', 'p99 ms', 'errors', 'upstream connections (per node)'],
      rows: body,
      notes: tool === 'load generator'
        ? ['The same load generator drives both: ioredis in non-cluster mode pointed at respool, and ioredis\'s Cluster client pointed at the nodes (one connection per node per client); enableAutoPipelining on both.']
        : ['redis-benchmark SET and GET averaged (commands/s) and the worse of the two (latencies); the direct side is redis-benchmark --cluster.']
    })
  }
  const body: string[][] = []
  for (const target of ['ioredis-cluster', 'respool'] as const) {
    const rs = runs.filter((r) => r.target === target)
    if (rs.length === 0) continue
    const seg = (name: string): SegmentResult[] => rs.map((r) => r.segments.find((s) => s.name === name)).filter((s): s is SegmentResult => s !== undefined)
    const cells: string[] = [target === 'respool' ? 'respool → cluster' : 'ioredis Cluster (direct)', fmtK(median(rs.map((r) => r.tookMs)))]
    for (const name of ['before', 'during', 'after']) {
      const ss = seg(name)
      cells.push(`${fmtK(median(ss.map((s) => s.rps)))} / ${fmtMs(median(ss.map((s) => ms(s.p99Us))))}`)
    }
    cells.push(String(rs.reduce((a, r) => a + r.segments.reduce((b, s) => b + sumErrors(s.errors), 0), 0)))
    body.push(cells)
  }
  out.push({
    title: `Resharding under load: redis-cli --cluster reshard of ${cfg.reshardSlots} slots with their keys, ${cfg.clients} clients at -P 1, median of ${cfg.rounds} round(s)`,
    headers: ['target', 'reshard ms', 'before: cmd/s / p99 ms', 'during: cmd/s / p99 ms', 'after: cmd/s / p99 ms', 'errors (all rounds)'],
    rows: body,
    notes: [`${cfg.keyspace} keys preloaded, so each slot moves with its keys; the direction alternates between two masters from run to run.`]
  })
  return out
}
