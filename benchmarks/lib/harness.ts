/**
 * Process and measurement plumbing for the end-to-end benchmarks: free loopback ports, starting
 * and always stopping redis-server / respool / nutcracker, running redis-benchmark and parsing
 * its CSV, and reading /proc for RSS and CPU time.
 *
 * Every child started here is tracked and killed on exit, on SIGINT/SIGTERM and on an uncaught
 * error, so an interrupted benchmark leaves nothing running.
 */
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root (this file runs from dist/benchmarks/lib/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
export const RESPOOL_BIN = join(REPO_ROOT, 'bin', 'respool.js')
export const RESULTS_DIR = join(REPO_ROOT, 'benchmarks', 'results')
/** Compiled worker scripts (child processes). */
export const WORKERS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'workers')

const HOST = '127.0.0.1'
const started = performance.now()

/** A progress line on stderr, prefixed with the elapsed time. */
export function progress (msg: string): void {
  const s = Math.floor((performance.now() - started) / 1000)
  process.stderr.write(`[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}\n`)
}

export function elapsedSeconds (): number {
  return (performance.now() - started) / 1000
}

// ---------------------------------------------------------------------------------------------
// Child process tracking and cleanup

const children = new Set<ChildProcess>()
let workDir: string | null = null

/** A scratch directory for configs and logs, removed on exit (KEEP_TMP=1 keeps it). */
export function scratchDir (): string {
  workDir ??= mkdtempSync(join(tmpdir(), 'respool-bench-'))
  return workDir
}

export function track (child: ChildProcess): ChildProcess {
  children.add(child)
  child.once('exit', () => { children.delete(child) })
  return child
}

function killAllNow (): void {
  for (const child of children) {
    try {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    } catch { /* already gone */ }
  }
  children.clear()
  if (workDir !== null && process.env.KEEP_TMP !== '1') {
    try { rmSync(workDir, { recursive: true, force: true }) } catch { /* best effort */ }
    workDir = null
  }
}

let cleanupInstalled = false
/** Kills every tracked child on exit, on signals and on uncaught errors. Call once at startup. */
export function installCleanup (): void {
  if (cleanupInstalled) return
  cleanupInstalled = true
  process.on('exit', killAllNow)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: stopping every process this benchmark started\n`)
      killAllNow()
      process.exit(130)
    })
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`uncaught: ${err.stack ?? String(err)}\n`)
    killAllNow()
    process.exit(1)
  })
}

/** Stops a child: SIGTERM, then SIGKILL after graceMs. Resolves once it has exited. */
export async function stopChild (child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGCONT')
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
  await exited
  clearTimeout(timer)
}

// ---------------------------------------------------------------------------------------------
// Ports and readiness

/** A loopback port that was free a moment ago. */
export async function freePort (): Promise<number> {
  const server = net.createServer()
  server.listen(0, HOST)
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  server.close()
  await once(server, 'close')
  return port
}

/** True if something answering PING (or an error) listens on the port. */
export async function ping (port: number, timeoutMs = 500): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port })
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(timeoutMs, () => { done(false) })
    socket.on('error', () => { done(false) })
    socket.on('close', () => { done(false) })
    // Multibulk, not inline: twemproxy only parses multibulk requests.
    socket.on('connect', () => { socket.write('*1\r\n$4\r\nPING\r\n') })
    socket.on('data', (d) => { done(d[0] === 0x2b || d[0] === 0x2d) })
  })
}

/**
 * True if process `pid` owns the socket listening on 127.0.0.1:port: guards against measuring
 * somebody else's server that took the port between freePort() and the child's bind.
 */
export function ownsListener (pid: number, port: number): boolean {
  const inodes = new Set<string>()
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length > 9 && f[1] === local && f[3] === '0A') inodes.add(f[9])
  }
  if (inodes.size === 0) return false
  let fds: string[]
  try { fds = readdirSync(`/proc/${pid}/fd`) } catch { return false }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m !== null && inodes.has(m[1])) return true
    } catch { /* fd closed meanwhile */ }
  }
  return false
}

async function waitReady (child: ChildProcess, port: number, what: string, logFile: string, timeoutMs = 10000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = safeRead(logFile)
      if (/EADDRINUSE|Address already in use/.test(log)) return false
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${log.slice(-2000)}`)
    }
    if (await ping(port) && child.pid !== undefined && ownsListener(child.pid, port)) return true
    await delay(25)
  }
  await stopChild(child)
  throw new Error(`${what} did not come up on ${port} within ${timeoutMs} ms: ${safeRead(logFile).slice(-2000)}`)
}

function safeRead (file: string): string {
  try { return readFileSync(file, 'utf8') } catch { return '' }
}

// ---------------------------------------------------------------------------------------------
// The servers

export type TargetKind = 'direct' | 'respool' | 'twemproxy'

export interface Server {
  /** Label used in tables: direct, respool(8), twemproxy(1) … */
  name: string
  kind: TargetKind
  port: number
  pid: number
  child: ChildProcess
  logFile: string
  stop: () => Promise<void>
}

async function startWithRetry (what: string, launch: (port: number, logFile: string) => ChildProcess): Promise<{ child: ChildProcess, port: number, logFile: string }> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const port = await freePort()
    const logFile = join(scratchDir(), `${what.replace(/[^a-z0-9]+/gi, '-')}-${port}.log`)
    const child = track(launch(port, logFile))
    if (await waitReady(child, port, what, logFile)) return { child, port, logFile }
    await stopChild(child)
  }
  throw new Error(`could not start ${what} on a free port`)
}

function logFd (logFile: string): number {
  return openSync(logFile, 'a')
}

let limits: { soft: number, hard: number } | null = null

/**
 * The command and arguments that run `cmd` with the open-files limit raised to the hard limit:
 * `bash -c 'ulimit -n <hard>; exec …'` (same pid after exec) when the soft limit is lower.
 */
export function withFdLimit (cmd: string, args: string[]): [string, string[]] {
  limits ??= fdLimit()
  return limits.soft < limits.hard
    ? ['bash', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', cmd, ...args]]
    : [cmd, args]
}

/**
 * Spawns with stdout/stderr to a log file. When the soft open-files limit is below the hard one,
 * the command runs as `bash -c 'ulimit -n <hard>; exec …'` (same pid after exec) so 10,000 idle
 * clients fit.
 */
function spawnLogged (cmd: string, args: string[], logFile: string): ChildProcess {
  const [file, argv] = withFdLimit(cmd, args)
  const fd = logFd(logFile)
  try {
    return spawn(file, argv, { stdio: ['ignore', fd, fd] })
  } finally {
    closeSync(fd)
  }
}

/** redis-server on a free loopback port, no persistence. */
export async function startRedis (extra: string[] = []): Promise<Server> {
  const dir = mkdtempSync(join(scratchDir(), 'redis-'))
  const { child, port, logFile } = await startWithRetry('redis-server', (port, logFile) => spawnLogged('redis-server', [
    '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--protected-mode', 'no',
    '--loglevel', 'warning', '--dir', dir, '--maxclients', '15000', ...extra
  ], logFile))
  return { name: 'direct', kind: 'direct', port, pid: child.pid as number, child, logFile, stop: async () => { await stopChild(child) } }
}

export interface RespoolOptions {
  poolSize: number
  /** Extra CLI flags (e.g. ['--max-clients', '20000']). */
  extra?: string[]
  /** Flags for Node.js itself, before the script (e.g. ['--trace-gc']); its output goes to the log file. */
  nodeArgs?: string[]
  /** --workers for this one (default: RESPOOL_WORKERS). */
  workers?: number
  name?: string
}

/** The Node.js binary respool runs on: BENCH_NODE, else the one running the benchmark. */
export const BENCH_NODE = process.env.BENCH_NODE ?? process.execPath

/**
 * Flags for Node.js given to every respool the benchmarks start: those of bin/respool.js's
 * first line (`#!/usr/bin/env -S node …`, what a user running `respool` gets), then
 * BENCH_NODE_ARGS (space-separated), which may override them.
 */
export const BENCH_NODE_ARGS = [
  ...shebangNodeArgs(RESPOOL_BIN),
  ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((x) => x !== '')
]

function shebangNodeArgs (file: string): string[] {
  const first = readFileSync(file, 'utf8').split('\n', 1)[0]
  const match = /^#!\S*env -S node(.*)$/.exec(first)
  return match === null ? [] : match[1].split(' ').filter((x) => x !== '')
}

/** The version of BENCH_NODE. */
export function respoolNodeVersion (): string {
  return BENCH_NODE === process.execPath ? process.version : commandOutput(BENCH_NODE, ['--version'])
}

/**
 * RESPOOL_WORKERS=N runs every respool with `--workers N` (N processes on one port, the pool size
 * split between them); respool would read the variable itself, it is passed explicitly so the
 * report's names and the pool-size check show it.
 */
export const RESPOOL_WORKERS = Number(process.env.RESPOOL_WORKERS ?? '1')

/** respool from dist, as its own process: `node bin/respool.js --port P --upstream … --pool-size N --log-level warn [--workers W]`. */
export async function startRespool (redisPort: number, opts: RespoolOptions): Promise<Server> {
  const count = opts.workers ?? RESPOOL_WORKERS
  if (!Number.isInteger(count) || count < 1) throw new Error(`RESPOOL_WORKERS must be a whole number from 1, got ${opts.workers ?? process.env.RESPOOL_WORKERS ?? ''}`)
  // One connection cannot carry both shared traffic and a pinned client, in each worker.
  const least = 2 * count
  if (!Number.isInteger(opts.poolSize) || opts.poolSize < least) throw new Error(`respool needs --pool-size ${least} or more${count > 1 ? ` with ${count} workers` : ''}, got ${opts.poolSize}`)
  const workers = count > 1 ? ['--workers', String(count)] : []
  const name = opts.name ?? (count > 1 ? `respool(${opts.poolSize})×${count}w` : `respool(${opts.poolSize})`)
  const { child, port, logFile } = await startWithRetry(name, (port, logFile) => spawnLogged(BENCH_NODE, [
    ...BENCH_NODE_ARGS, ...(opts.nodeArgs ?? []), RESPOOL_BIN, '--port', String(port), '--upstream', `redis://${HOST}:${redisPort}`,
    '--pool-size', String(opts.poolSize), '--log-level', 'warn', ...workers, ...(opts.extra ?? [])
  ], logFile))
  return { name, kind: 'respool', port, pid: child.pid as number, child, logFile, stop: async () => { await stopChild(child) } }
}

export interface TwemproxyOptions {
  serverConnections: number
  /** nutcracker -m (mbuf size, bytes); default 16384. */
  mbufSize?: number
  name?: string
}

/** nutcracker with a generated one-server config, stats bound to loopback on a free port. */
export async function startTwemproxy (redisPort: number, opts: TwemproxyOptions): Promise<Server> {
  const name = opts.name ?? `twemproxy(${opts.serverConnections})`
  const statsPort = await freePort()
  const { child, port, logFile } = await startWithRetry(name, (port, logFile) => {
    const conf = join(scratchDir(), `nutcracker-${port}.yml`)
    writeFileSync(conf, twemproxyConfig(port, redisPort, opts.serverConnections))
    return spawnLogged('nutcracker', [
      '-c', conf, '-s', String(statsPort), '-a', HOST, '-o', logFile,
      ...(opts.mbufSize !== undefined ? ['-m', String(opts.mbufSize)] : [])
    ], logFile)
  })
  return { name, kind: 'twemproxy', port, pid: child.pid as number, child, logFile, stop: async () => { await stopChild(child) } }
}

export function twemproxyConfig (listenPort: number, redisPort: number, serverConnections: number): string {
  return [
    'bench:',
    `  listen: ${HOST}:${listenPort}`,
    '  redis: true',
    '  hash: fnv1a_64',
    '  distribution: ketama',
    '  auto_eject_hosts: false',
    '  preconnect: true',
    `  server_connections: ${serverConnections}`,
    '  servers:',
    `   - ${HOST}:${redisPort}:1`,
    ''
  ].join('\n')
}

/**
 * The commit the benchmark runs at, and whether src/bin or benchmarks/ differ from it (read-only
 * git queries; a snapshot copy without .git passes BENCH_COMMIT, BENCH_DIRTY and BENCH_SCRIPTS_DIRTY).
 */
export function revision (): { commit: string, srcDirty: string, benchDirty: string } {
  const env = process.env
  const dirty = (paths: string[]): string => commandOutput('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', ...paths]) === '' ? 'no' : 'yes'
  return {
    commit: env.BENCH_COMMIT ?? (commandOutput('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']) || 'unknown'),
    srcDirty: env.BENCH_DIRTY ?? dirty(['src', 'bin']),
    benchDirty: env.BENCH_SCRIPTS_DIRTY ?? dirty(['benchmarks'])
  }
}

/** "commit abc1234" plus what differed from it, for the line under every table. */
export function revisionNote (r: { commit: string, srcDirty: string, benchDirty: string }): string {
  const changed = [r.srcDirty === 'yes' ? 'src/bin' : null, r.benchDirty === 'yes' ? 'benchmarks/' : null].filter((x) => x !== null)
  return `measured at commit ${r.commit}${changed.length > 0 ? ` with uncommitted changes in ${changed.join(' and ')}` : ''}`
}

export function hasCommand (cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** stdout and stderr of a short command, trimmed ('' if it cannot run). nutcracker prints its version on stderr. */
export function commandOutput (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 })
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim()
}

/** Warning and error lines a respool log holds (level ≥ 40 in pino JSON, or plain text). */
export function logProblems (logFile: string, max = 20): { count: number, samples: string[] } {
  const samples: string[] = []
  let count = 0
  for (const line of safeRead(logFile).split('\n')) {
    if (line.trim() === '') continue
    let bad = true
    try {
      const rec = JSON.parse(line) as { level?: number }
      bad = (rec.level ?? 50) >= 40
    } catch { /* not JSON: count it */ }
    if (!bad) continue
    count++
    if (samples.length < max) samples.push(line.slice(0, 400))
  }
  return { count, samples }
}

// ---------------------------------------------------------------------------------------------
// /proc

/**
 * The direct children of a process (respool's workers under RESPOOL_WORKERS; none for the other
 * servers): their CPU and memory count as the process's own.
 */
function childPids (pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter((p) => p !== '').map(Number)
  } catch {
    return []
  }
}

/** VmRSS and VmHWM of a process and its children, in KiB. */
export function memoryKiB (pid: number): { rss: number, hwm: number } | null {
  const own = processMemoryKiB(pid)
  if (own === null) return null
  for (const child of childPids(pid)) {
    const m = processMemoryKiB(child)
    if (m !== null) { own.rss += m.rss; own.hwm += m.hwm }
  }
  return own
}

function processMemoryKiB (pid: number): { rss: number, hwm: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = /VmRSS:\s+(\d+)/.exec(text)
    const hwm = /VmHWM:\s+(\d+)/.exec(text)
    if (rss === null || hwm === null) return null
    return { rss: Number(rss[1]), hwm: Number(hwm[1]) }
  } catch {
    return null
  }
}

const CLK_TCK = Number(commandOutput('getconf', ['CLK_TCK'])) || 100

/** User+system CPU seconds a process has used so far. */
export function cpuSeconds (pid: number): number | null {
  const t = cpuTimes(pid)
  return t === null ? null : t.user + t.sys
}

/** User and system CPU seconds a process (all its threads) and its children have used so far, from /proc/<pid>/stat. */
export function cpuTimes (pid: number): { user: number, sys: number } | null {
  const own = processCpuTimes(pid)
  if (own === null) return null
  for (const child of childPids(pid)) {
    const t = processCpuTimes(child)
    if (t !== null) { own.user += t.user; own.sys += t.sys }
  }
  return own
}

function processCpuTimes (pid: number): { user: number, sys: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // After the comm field: state is f[0]; utime and stime are fields 14 and 15 of the whole line.
    return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK }
  } catch {
    return null
  }
}

export function fdLimit (): { soft: number, hard: number } {
  const soft = Number(commandOutput('sh', ['-c', 'ulimit -Sn']))
  const hard = Number(commandOutput('sh', ['-c', 'ulimit -Hn']))
  return { soft: Number.isFinite(soft) ? soft : 1024, hard: Number.isFinite(hard) ? hard : 1024 }
}

// ---------------------------------------------------------------------------------------------
// redis-benchmark

export interface BenchLine {
  test: string
  rps: number
  avgMs: number
  p50Ms: number
  p95Ms: number
  p99Ms: number
  maxMs: number
}

export interface BenchRun {
  lines: Map<string, BenchLine>
  /** Output lines that were neither the CSV header nor data (errors, warnings). */
  notes: string[]
  wallMs: number
  /** CPU used by the measured process during the run, as a fraction of one core. */
  cpu: number | null
  timedOut: boolean
  exitCode: number | null
}

export interface BenchArgs {
  clients: number
  pipeline: number
  requests: number
  tests: string[]
  /** -r keyspace (default 100000), -d value size (default 3, redis-benchmark's own default). */
  keyspace?: number
  dataSize?: number
}

export function benchArgv (port: number, a: BenchArgs): string[] {
  return [
    '-h', HOST, '-p', String(port), '-c', String(a.clients), '-P', String(a.pipeline), '-n', String(a.requests),
    '-r', String(a.keyspace ?? 100000), '-d', String(a.dataSize ?? 3), '-t', a.tests.join(','), '--csv'
  ]
}

/** Harmless lines redis-benchmark prints (twemproxy does not implement CONFIG). */
const KNOWN_NOTES = [/^WARNING: Could not fetch server CONFIG$/]

/** Runs redis-benchmark once; `watchPid` is the process whose CPU time is measured. */
export async function redisBenchmark (port: number, a: BenchArgs, watchPid: number | null, timeoutMs: number): Promise<BenchRun> {
  const argv = benchArgv(port, a)
  const child = track(spawn('redis-benchmark', argv, { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const cpu0 = watchPid === null ? null : cpuSeconds(watchPid)
  const t0 = performance.now()
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, timeoutMs)
  const [code] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  const wallMs = performance.now() - t0
  const cpu1 = watchPid === null ? null : cpuSeconds(watchPid)
  const cpu = cpu0 !== null && cpu1 !== null ? (cpu1 - cpu0) / (wallMs / 1000) : null
  const { lines, notes } = parseCsv(out)
  if (timedOut) notes.push(`timed out after ${timeoutMs} ms: redis-benchmark ${argv.join(' ')}`)
  else if (code !== 0) notes.push(`redis-benchmark exited with ${code}`)
  for (const t of a.tests) {
    if (!lines.has(t.toUpperCase())) notes.push(`no result for ${t.toUpperCase()}`)
  }
  return { lines, notes, wallMs, cpu, timedOut, exitCode: code }
}

/** Parses redis-benchmark 7 `--csv`: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms". */
export function parseCsv (text: string): { lines: Map<string, BenchLine>, notes: string[] } {
  const lines = new Map<string, BenchLine>()
  const notes: string[] = []
  let header: string[] | null = null
  // redis-benchmark rewrites a progress line with \r; only the final lines count.
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.includes('\r') ? raw.slice(raw.lastIndexOf('\r') + 1) : raw
    if (line.trim() === '') continue
    if (line.startsWith('"test"')) {
      header = splitCsv(line)
      continue
    }
    const cells = splitCsv(line)
    if (header !== null && cells.length === header.length && line.startsWith('"')) {
      const get = (name: string): number => Number(cells[header?.indexOf(name) ?? -1])
      lines.set(cells[0], {
        test: cells[0],
        rps: get('rps'),
        avgMs: get('avg_latency_ms'),
        p50Ms: get('p50_latency_ms'),
        p95Ms: get('p95_latency_ms'),
        p99Ms: get('p99_latency_ms'),
        maxMs: get('max_latency_ms')
      })
      continue
    }
    if (!KNOWN_NOTES.some((re) => re.test(line.trim()))) notes.push(line.trim().slice(0, 300))
  }
  return { lines, notes }
}

function splitCsv (line: string): string[] {
  return line.split(',').map((c) => c.trim().replace(/^"|"$/g, ''))
}

// ---------------------------------------------------------------------------------------------
// Statistics

/**
 * xs rotated left by k: round r of a cell runs the targets in rotated(targets, r + cell index), so
 * over the rounds each target takes each place in the order and none always runs first or last.
 */
export function rotated<T> (xs: readonly T[], k: number): T[] {
  if (xs.length === 0) return []
  const n = ((k % xs.length) + xs.length) % xs.length
  return [...xs.slice(n), ...xs.slice(0, n)]
}

export function median (xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const mid = v.length >> 1
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2
}

/** Percentile of already-sorted numbers (nearest rank). */
export function percentileSorted (sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[idx]
}
