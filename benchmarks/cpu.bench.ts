/**
 * Where a command's cost goes, in respool and in twemproxy, under one load:
 * `redis-benchmark -c 50 -P 1 -n 200000 -t get` against each proxy in turn.
 *
 *   npm run build && node dist/benchmarks/cpu.bench.js
 *   CPU_CLIENTS=500 CPU_TOOLS=strace node dist/benchmarks/cpu.bench.js
 *
 * For each proxy, one run per measurement, each after a warm-up:
 * - cpu:    user and system CPU time of the proxy process (/proc/<pid>/stat, all threads) per command;
 * - strace: system calls per 100,000 commands (`strace -c -f -p <pid>` attached for the run);
 *           strace slows the process down, so that run's throughput is not reported;
 * - perf:   where the CPU samples fall, by binary (`perf record -e cpu-clock -p <pid>`, then
 *           `perf report --sort dso`); JIT-compiled JavaScript (V8's generated code) is [JIT];
 * - gc:     respool only, started with `node --trace-gc`: scavenges and their pauses during the run,
 *           with the flags bin/respool.js starts Node.js with (and BENCH_NODE_ARGS), and with
 *           CPU_SEMI_SPACE added (`--min-semi-space-size=16 --max-semi-space-size=32` by default).
 * strace and perf are skipped when not on the PATH (or when perf may not sample the process).
 * Output: tables on stdout, benchmarks/results/cpu-bench-<time>.{json,md} and cpu-latest.*.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import {
  BENCH_NODE_ARGS, RESULTS_DIR, cpuTimes, hasCommand, installCleanup, median, progress, redisBenchmark, respoolNodeVersion, revision, revisionNote,
  scratchDir, startRedis, startRespool, startTwemproxy, stopChild, track, type BenchRun, type Server
} from './lib/harness.js'
import { fmtInt, fmtMs, markdownTable, textTable, type Table } from './lib/table.js'

const env = process.env
const CLIENTS = Number(env.CPU_CLIENTS ?? 50)
const PIPELINE = Number(env.CPU_PIPELINE ?? 1)
const REQUESTS = Number(env.CPU_REQUESTS ?? 200000)
const TEST = (env.CPU_TEST ?? 'get').toLowerCase()
const POOL_SIZE = Number(env.POOL_SIZE ?? 8)
const TOOLS = new Set((env.CPU_TOOLS ?? 'cpu,strace,perf,gc').split(',').map((x) => x.trim()))
const SEMI_SPACE = (env.CPU_SEMI_SPACE ?? '--min-semi-space-size=16 --max-semi-space-size=32').split(' ').filter((x) => x !== '')
const TOP = Number(env.CPU_TOP ?? 8)
const TIMEOUT_MS = 300000

const load = `redis-benchmark -c ${CLIENTS} -P ${PIPELINE} -n ${REQUESTS} -t ${TEST}`

async function run (target: Server): Promise<BenchRun> {
  const r = await redisBenchmark(target.port, { clients: CLIENTS, pipeline: PIPELINE, requests: REQUESTS, tests: [TEST] }, target.pid, TIMEOUT_MS)
  if (r.notes.length > 0) progress(`${target.name}: redis-benchmark said ${r.notes.join(' / ')}`)
  return r
}

async function warmUp (target: Server): Promise<void> {
  await redisBenchmark(target.port, { clients: CLIENTS, pipeline: PIPELINE, requests: Math.min(REQUESTS, 50000), tests: [TEST] }, null, TIMEOUT_MS)
}

const line = (r: BenchRun): { rps: number, p50: number, p99: number } => {
  const l = r.lines.get(TEST.toUpperCase())
  return { rps: l?.rps ?? NaN, p50: l?.p50Ms ?? NaN, p99: l?.p99Ms ?? NaN }
}

// ---------------------------------------------------------------------------------------------
// CPU time per command

interface CpuRow { target: string, commands: number, userUs: number, sysUs: number, rps: number, p99: number }

async function cpuPerCommand (target: Server): Promise<CpuRow> {
  const before = cpuTimes(target.pid)
  const r = await run(target)
  const after = cpuTimes(target.pid)
  const n = REQUESTS
  const userUs = before !== null && after !== null ? (after.user - before.user) * 1e6 / n : NaN
  const sysUs = before !== null && after !== null ? (after.sys - before.sys) * 1e6 / n : NaN
  return { target: target.name, commands: n, userUs, sysUs, rps: line(r).rps, p99: line(r).p99 }
}

// ---------------------------------------------------------------------------------------------
// A tool attached to the proxy for one run

/** Starts `cmd args` (which attaches to the proxy), runs the load, stops it with SIGINT. */
async function attached (target: Server, cmd: string, args: string[], ready: (stderr: string) => boolean): Promise<{ run: BenchRun, stderr: string }> {
  const child: ChildProcess = track(spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] }))
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  const deadline = performance.now() + 5000
  while (!ready(stderr) && child.exitCode === null && performance.now() < deadline) await delay(20)
  await delay(200)
  if (child.exitCode !== null) throw new Error(`${cmd} exited at once: ${stderr.slice(-500)}`)
  const r = await run(target)
  const exited = once(child, 'exit')
  child.kill('SIGINT')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 30000)
  await exited
  clearTimeout(timer)
  return { run: r, stderr }
}

/** `strace -c` summary: calls per system call. */
function parseStrace (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const l of text.split('\n')) {
    // % time     seconds  usecs/call     calls    errors syscall
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$/.exec(l)
    if (m !== null && m[2] !== 'total') out.set(m[2], Number(m[1]))
  }
  return out
}

async function syscalls (target: Server): Promise<Map<string, number>> {
  const file = join(scratchDir(), `strace-${target.pid}.txt`)
  await attached(target, 'strace', ['-c', '-f', '-o', file, '-p', String(target.pid)], (e) => /attached/.test(e))
  const counts = parseStrace(readFileSync(file, 'utf8'))
  rmSync(file, { force: true })
  return counts
}

/** `perf report --sort dso` lines: share of samples by binary. */
async function perfByBinary (target: Server): Promise<Map<string, number>> {
  const file = join(scratchDir(), `perf-${target.pid}.data`)
  await attached(target, 'perf', ['record', '-e', 'cpu-clock', '-p', String(target.pid), '-o', file], () => true)
  const report = spawnSync('perf', ['report', '-i', file, '--sort', 'dso', '--stdio'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  const out = new Map<string, number>()
  for (const l of (report.stdout ?? '').split('\n')) {
    const m = /^\s*([\d.]+)%\s+(\S.*?)\s*$/.exec(l)
    // JIT-compiled code is reported per thread ("[JIT] tid 1234"): one row for all of it.
    const bin = m === null ? null : m[2].replace(/^\[JIT\] tid \d+$/, '[JIT]')
    if (m !== null && bin !== null) out.set(bin, (out.get(bin) ?? 0) + Number(m[1]))
  }
  try { if (statSync(file).isFile()) rmSync(file, { force: true }) } catch { /* gone */ }
  return out
}

// ---------------------------------------------------------------------------------------------
// GC under load (--trace-gc)

interface GcRow { variant: string, seconds: number, scavenges: number, perSecond: number, pauseP50: number, pauseMax: number, pauseTotal: number, majors: number, rps: number, p50: number, p99: number }

async function gcRun (redisPort: number, variant: string, nodeArgs: string[]): Promise<GcRow> {
  const rp = await startRespool(redisPort, { poolSize: POOL_SIZE, nodeArgs: ['--trace-gc', ...nodeArgs], name: `respool(${POOL_SIZE}) ${variant}` })
  try {
    await warmUp(rp)
    const from = statSync(rp.logFile).size
    const r = await run(rp)
    await delay(100)
    const text = readFileSync(rp.logFile, 'utf8').slice(from)
    const pauses: number[] = []
    let majors = 0
    for (const l of text.split('\n')) {
      const m = /: (Scavenge|Mark-Compact|Mark-Sweep|Minor Mark-Compact|Minor Mark-Sweep)\b[^,]*, ([\d.]+) \/ [\d.]+ ms/.exec(l)
      if (m === null) continue
      if (m[1] === 'Scavenge' || m[1].startsWith('Minor')) pauses.push(Number(m[2]))
      else majors++
    }
    const seconds = r.wallMs / 1000
    const l = line(r)
    return {
      variant,
      seconds,
      scavenges: pauses.length,
      perSecond: pauses.length / seconds,
      pauseP50: median(pauses),
      pauseMax: pauses.length > 0 ? Math.max(...pauses) : NaN,
      pauseTotal: pauses.reduce((a, b) => a + b, 0),
      majors,
      rps: l.rps,
      p50: l.p50,
      p99: l.p99
    }
  } finally {
    await rp.stop()
  }
}

// ---------------------------------------------------------------------------------------------

function perfAllowed (): boolean {
  if (!hasCommand('perf')) return false
  const r = spawnSync('perf', ['stat', '-e', 'cpu-clock', 'true'], { encoding: 'utf8' })
  return r.status === 0
}

async function main (): Promise<void> {
  installCleanup()
  const useStrace = TOOLS.has('strace') && hasCommand('strace')
  const usePerf = TOOLS.has('perf') && perfAllowed()
  const tools = [...TOOLS].filter((t) => (t !== 'strace' || useStrace) && (t !== 'perf' || usePerf))
  const loadAtStart = loadavg().map((x) => x.toFixed(2)).join(' ')
  progress(`cpu: ${load} against respool(${POOL_SIZE}) and twemproxy(1); ${tools.join(', ')}; load ${loadAtStart}`)
  const redis = await startRedis()
  const targets: Server[] = []
  const cpuRows: CpuRow[] = []
  const sys = new Map<string, Map<string, number>>()
  const dso = new Map<string, Map<string, number>>()
  const gcRows: GcRow[] = []
  try {
    targets.push(await startRespool(redis.port, { poolSize: POOL_SIZE }))
    if (hasCommand('nutcracker')) targets.push(await startTwemproxy(redis.port, { serverConnections: 1 }))
    for (const t of targets) {
      await warmUp(t)
      if (TOOLS.has('cpu')) {
        const row = await cpuPerCommand(t)
        cpuRows.push(row)
        progress(`${t.name}: ${(row.userUs + row.sysUs).toFixed(1)} µs CPU per command (user ${row.userUs.toFixed(1)}, system ${row.sysUs.toFixed(1)}), ${fmtInt(row.rps)} ops/s`)
      }
      if (useStrace) {
        sys.set(t.name, await syscalls(t))
        progress(`${t.name}: strace done`)
      }
      if (usePerf) {
        dso.set(t.name, await perfByBinary(t))
        progress(`${t.name}: perf done`)
      }
    }
    for (const t of targets) await stopChild(t.child)
    if (TOOLS.has('gc')) {
      const shipped = BENCH_NODE_ARGS.length > 0 ? BENCH_NODE_ARGS.join(' ') : 'default young generation'
      for (const [variant, args] of [[shipped, []], [SEMI_SPACE.join(' '), SEMI_SPACE]] as Array<[string, string[]]>) {
        const row = await gcRun(redis.port, variant, args)
        gcRows.push(row)
        progress(`gc, ${variant}: ${row.scavenges} scavenges in ${row.seconds.toFixed(1)} s, pause p50 ${row.pauseP50.toFixed(2)} ms max ${row.pauseMax.toFixed(2)} ms, p99 ${fmtMs(row.p99)} ms`)
      }
    }
  } finally {
    for (const t of targets) await stopChild(t.child)
    await redis.stop()
  }

  const rev = revision()
  const measuredAt = `${revisionNote(rev)}; node ${respoolNodeVersion()} on ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown'}; load average ${loadAtStart} at the start`
  const tables: Table[] = []
  if (cpuRows.length > 0) {
    tables.push({
      title: `CPU per command: ${load}`,
      headers: ['target', 'commands', 'user µs', 'system µs', 'total µs', 'system share', 'ops/s', 'p99 ms'],
      rows: cpuRows.map((r) => [r.target, fmtInt(r.commands), r.userUs.toFixed(1), r.sysUs.toFixed(1), (r.userUs + r.sysUs).toFixed(1), `${Math.round(100 * r.sysUs / (r.userUs + r.sysUs))}%`, fmtInt(r.rps), fmtMs(r.p99)]),
      notes: ['utime and stime of the proxy process (all threads) from /proc/<pid>/stat over the run, divided by the commands sent; 10 ms clock ticks']
    })
  }
  if (sys.size > 0) {
    const names = [...sys.keys()]
    const calls = new Set<string>()
    for (const m of sys.values()) [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP).forEach(([c]) => calls.add(c))
    tables.push({
      title: `System calls per 100,000 commands: ${load}, strace -c -f attached for the run`,
      headers: ['system call', ...names],
      rows: [...calls].map((c) => [c, ...names.map((n) => fmtInt(100000 * (sys.get(n)?.get(c) ?? 0) / REQUESTS))]),
      notes: [`the ${TOP} most frequent calls of each proxy; every thread of the process counted`]
    })
  }
  if (dso.size > 0) {
    const names = [...dso.keys()]
    const bins = new Set<string>()
    for (const m of dso.values()) [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP).forEach(([b]) => bins.add(b))
    tables.push({
      title: `CPU samples by binary: ${load}, perf record -e cpu-clock -p <pid> for the run, perf report --sort dso`,
      headers: ['binary', ...names],
      rows: [...bins].map((b) => [b, ...names.map((n) => { const v = dso.get(n)?.get(b); return v === undefined ? '—' : `${v.toFixed(1)}%` })]),
      notes: ['[kernel.kallsyms] is kernel time (system calls, loopback TCP); [JIT] is code V8 generated (JavaScript, respool\'s and Node\'s); node is the Node.js binary (V8 runtime and builtins, libuv, Node\'s C++)']
    })
  }
  if (gcRows.length > 0) {
    tables.push({
      title: `respool(${POOL_SIZE}) young-generation collections under load: ${load}, node --trace-gc`,
      headers: ['young generation', 'run s', 'scavenges', 'ms apart', 'pause p50 ms', 'pause max ms', 'paused ms in all', 'major GCs', 'ops/s', 'p50 ms', 'p99 ms'],
      rows: gcRows.map((r) => [r.variant, r.seconds.toFixed(1), fmtInt(r.scavenges), (1000 / r.perSecond).toFixed(0), r.pauseP50.toFixed(2), r.pauseMax.toFixed(2), r.pauseTotal.toFixed(0), String(r.majors), fmtInt(r.rps), fmtMs(r.p50), fmtMs(r.p99)]),
      notes: ['each row is a fresh respool process started with node --trace-gc (and the flags shown), warmed up first; pauses are the first figure V8 prints per collection']
    })
  }
  for (const t of tables) t.notes = [...(t.notes ?? []), measuredAt]
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = join(RESULTS_DIR, `cpu-bench-${stamp}`)
  writeFileSync(`${base}.json`, JSON.stringify({
    ...rev, node: respoolNodeVersion(), load, loadAtStart, tools,
    cpu: cpuRows, syscalls: Object.fromEntries([...sys].map(([k, v]) => [k, Object.fromEntries(v)])), perf: Object.fromEntries([...dso].map(([k, v]) => [k, Object.fromEntries(v)])), gc: gcRows
  }, null, 2))
  writeFileSync(`${base}.md`, tables.map(markdownTable).join('\n\n') + '\n')
  copyFileSync(`${base}.json`, join(RESULTS_DIR, 'cpu-latest.json'))
  copyFileSync(`${base}.md`, join(RESULTS_DIR, 'cpu-latest.md'))
  process.stdout.write(`${tables.map(textTable).join('\n\n')}\n\nWrote ${base}.json and .md (and cpu-latest.*)\n`)
}

main().then(() => { process.exit(0) }, (err: Error) => {
  process.stderr.write(`cpu benchmark failed: ${err.stack ?? String(err)}\n`)
  process.exit(1)
})
