import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Redis } from 'ioredis'
import { startSentinelSetup, type SentinelSetup } from '../helpers/sentinel-setup.js'
import { enqueueJobs, sidekiqCommand, until } from '../helpers/sidekiq.js'
import { startProxy } from '../helpers/proxy.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// Sidekiq 6.4 (Debian ruby-sidekiq) through respool in Sentinel mode across a SENTINEL FAILOVER
// (1 master, 1 replica, 3 sentinels). A first wave of jobs is running when the master moves; a
// second wave is enqueued after the switch. No job may be lost, and only the jobs in flight at
// the switch (at most one per worker thread) may run twice: a job whose Redis command got
// respool's "the master changed … may or may not have run" error fails and is retried.

const POOL_SIZE = 5
const CONCURRENCY = 10
const FIRST_WAVE = 600 // about 3 s of work: still running when a slow failover switches
const SECOND_WAVE = 50
/** Jobs run before the failover is triggered. */
const FAILOVER_AFTER = 30

let setup: SentinelSetup
let proxy: ProxyServer
let workDir: string
const children = new Set<ChildProcess>()

before(async () => {
  setup = await startSentinelSetup()
  proxy = await startProxy({ sentinels: setup.sentinelAddresses, sentinelMaster: setup.name, poolSize: POOL_SIZE, upstreamIdleTimeoutMs: 600_000 })
  workDir = await mkdtemp(path.join(tmpdir(), 'respool-sidekiq-failover-'))
})
after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  await proxy?.destroy()
  await setup?.stop()
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true })
})

// Each job records its jid at its end (ran, done). A failed job is retried after about a
// second: the retry delay and the scheduled-set poll are shortened from their defaults (15 s +
// jitter, 5–15 s) to keep the test short; everything else is stock Sidekiq.
const WORKER = `
require 'sidekiq'
# redis-rb 4.8 warns about Sidekiq 6.4's positional BRPOP timeout and SADD's return value.
Redis.silence_deprecations = true

Sidekiq.options[:poll_interval_average] = 1
Sidekiq::JobRetry.prepend(Module.new do
  def delay_for(*) = 1
end)

class CountingJob
  include Sidekiq::Worker
  sidekiq_options retry: 5

  def perform(n)
    sleep 0.05
    Sidekiq.redis do |c|
      c.sadd('ran', jid)
      c.incr('done')
    end
  end
end
`

async function enqueue (env: NodeJS.ProcessEnv, from: number, to: number): Promise<string[]> {
  return await enqueueJobs(workDir, env, from, to)
}

test(`Sidekiq 6.4 (${CONCURRENCY} threads) through respool across SENTINEL FAILOVER: no job lost, at most the jobs in flight at the switch run twice`, {
  // Sentinel announces +switch-master about a second after it promoted the replica. A job fetched
  // from the old master in between would run twice, and one completed there would leave no
  // writes: respool leaves the old master at +failover-state-send-slaveof-noone.
  timeout: 90000
}, async (t) => {
  await writeFile(path.join(workDir, 'worker.rb'), WORKER)
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: `redis://127.0.0.1:${proxy.address.port}/0` }
  delete env.REDIS_PROVIDER
  // Reads go straight to the node the sentinels name (a demoted master still answers reads).
  const admin = async (): Promise<Redis> => setup.nodeClient(await setup.masterPort())
  const count = async (key: string): Promise<number> => Number(await (await admin()).get(key))

  await until(() => proxy.topology.master !== null, 'respool verified the master', 10000)
  let switchedAt = 0
  proxy.topology.onChange((previous) => { if (previous !== null && switchedAt === 0) switchedAt = Date.now() })

  // What the sentinels announce, and when: the replica is promoted well before +switch-master.
  const events = new Map<string, number>()
  const listener = setup.sentinelClient(0).duplicate()
  listener.on('error', () => {})
  listener.on('pmessage', (_p: string, channel: string) => { if (/^\+(selected-slave|promoted-slave|switch-master)$/.test(channel) && !events.has(channel)) events.set(channel, Date.now()) })
  await listener.psubscribe('*')
  after(() => { listener.disconnect() })

  const [program, prefix] = sidekiqCommand()
  const started = Date.now()
  const sidekiq = spawn(program, [...prefix, '-r', './worker.rb', '-c', String(CONCURRENCY), '-t', '8', '-q', 'default'],
    { cwd: workDir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(sidekiq)
  let log = ''
  sidekiq.stdout.on('data', (d: Buffer) => { log += d.toString() })
  sidekiq.stderr.on('data', (d: Buffer) => { log += d.toString() })
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    sidekiq.on('close', (code, signal) => { resolve([code, signal]) })
  })
  const died = (): string | null => sidekiq.exitCode !== null || sidekiq.signalCode !== null
    ? `sidekiq exited early (${String(sidekiq.exitCode ?? sidekiq.signalCode)}):\n${log}`
    : null

  try {
    // Booted: the process has registered itself.
    await until(async () => (await (await admin()).scard('processes')) > 0, 'Sidekiq to start', 20000, died)

    const jids = await enqueue(env, 1, FIRST_WAVE)
    await until(async () => await count('done') >= FAILOVER_AFTER, `${FAILOVER_AFTER} jobs to run`, 20000, died)
    const old = await setup.masterPort()
    const next = await setup.failover()
    // On a timeout, say where respool's topology stands (the master it has, or what it waits for).
    await until(() => proxy.topology.master?.address.port === next,
      () => `respool follows the new master (${next}; respool has ${String(proxy.topology.master?.address.port ?? 'none')}, problem: ${String(proxy.topology.problem)}; sentinel events ${JSON.stringify([...events.keys()])})`, 10000, died)
    const doneAtSwitch = await count('done')
    assert.ok(doneAtSwitch < FIRST_WAVE, `the first wave was still running at the switch (${doneAtSwitch} done)`)

    jids.push(...await enqueue(env, FIRST_WAVE + 1, FIRST_WAVE + SECOND_WAVE))
    const total = FIRST_WAVE + SECOND_WAVE

    // Runs are counted from Sidekiq's log, not from Redis, so that what the failover did to the
    // data cannot hide a lost job: each run logs its start and its outcome (done, or fail when a
    // Redis command got an error and the job went to the retry set).
    const runsOf = (outcome: string): Map<string, number[]> => {
      const m = new Map<string, number[]>()
      for (const [, at, jid] of log.matchAll(new RegExp(`^(\\S+) .*jid=(\\w+) (?:elapsed=\\S+ )?INFO: ${outcome}$`, 'gm'))) m.set(jid, [...(m.get(jid) ?? []), Date.parse(at)])
      return m
    }
    await until(async () => jids.every((jid) => runsOf('done').has(jid)) && await (await admin()).zcard('retry') === 0, `all ${total} jobs to run`, 30000, died).catch(() => {})

    // Stop Sidekiq the way a deployment does; it waits for its fetchers (≤ 2 s BRPOPs).
    sidekiq.kill('SIGTERM')
    const killer = setTimeout(() => { sidekiq.kill('SIGKILL') }, 15000)
    let exitCode: number | null
    let exitSignal: NodeJS.Signals | null
    try {
      [exitCode, exitSignal] = await exited
    } finally {
      clearTimeout(killer)
    }
    children.delete(sidekiq)
    const stoppedAt = Date.now()

    const done = runsOf('done')
    const starts = runsOf('start')
    const failedRuns = [...runsOf('fail').values()].reduce((n, runs) => n + runs.length, 0)
    const lost = jids.filter((jid) => !done.has(jid))
    const twice = jids.filter((jid) => (starts.get(jid)?.length ?? 0) > 1)
    // Sentinel promotes the replica (+selected-slave, then SLAVEOF NO ONE) and announces
    // +switch-master about a second later; until then respool still sends to the old master,
    // whose writes from then on never reach the new one: a job it hands out (BRPOP) is still
    // queued on the new master and runs again there, and a job fetched before the promotion
    // whose own writes landed on the old master after it completed without a trace.
    const selectedAt = events.get('+selected-slave') ?? 0
    const inWindow = twice.filter((jid) => { const first = starts.get(jid)?.[0] ?? 0; return first >= selectedAt && first <= switchedAt })
    const db = await admin()
    const recorded = new Set(await db.smembers('ran'))
    const writesLost = jids.filter((jid) => done.has(jid) && !recorded.has(jid))
    const errorLines = log.split('\n').filter((l) => /\b(ERROR|FATAL)\b|Error fetching job|ConnectionPool::TimeoutError|Redis::\w*Error/.test(l))
    const since = (name: string): string => events.has(name) ? `${name} +${(events.get(name) ?? 0) - selectedAt} ms` : `no ${name}`
    t.diagnostic(`master ${old} → ${next}: ${since('+selected-slave')}, ${since('+promoted-slave')}, ${since('+switch-master')}, respool switched +${switchedAt - selectedAt} ms; ${doneAtSwitch} of ${FIRST_WAVE} jobs recorded on the new master at the switch`)
    t.diagnostic(`jobs: ${total} enqueued, ${done.size} ran to the end, ${lost.length} lost, ${twice.length} run twice (${inWindow.length} of them first run between +selected-slave and the switch), ${failedRuns} failed runs retried; ${writesLost.length} completed jobs whose writes are not on the new master`)
    t.diagnostic(`${errorLines.length} error lines in the Sidekiq log${errorLines.length > 0 ? ':\n' + [...new Set(errorLines.map((l) => l.replace(/^\S+ pid=\d+ tid=\w+ /, '').replace(/sentinel \S+: mymaster .*\)/, 'sentinel …)')))].join('\n') : ''}`)
    t.diagnostic(`Sidekiq ran ${stoppedAt - started} ms from its start to its exit (code ${String(exitCode ?? exitSignal)})`)

    const logWithoutJobs = log.split('\n').filter((l) => !/class=CountingJob (jid=\S+ )?(elapsed=\S+ )?INFO: (start|done)/.test(l)).join('\n')
    assert.equal(exitCode, 0, `sidekiq exit ${String(exitCode ?? exitSignal)}:\n${logWithoutJobs}`)
    assert.match(log, /Bye!/)
    const linesOf = (jid: string): string => log.split('\n').filter((l) => l.includes(jid)).join('\n')
    assert.deepEqual(lost, [], `jobs lost (never ran to the end): ${lost.length}; queue ${await db.llen('queue:default')}, retry ${await db.zcard('retry')}, dead ${await db.zcard('dead')}; their log lines:\n${lost.slice(0, 3).map(linesOf).join('\n')}`)
    assert.equal(await db.llen('queue:default'), 0)
    assert.equal(await db.zcard('retry'), 0)
    assert.equal(await db.zcard('dead'), 0)
    assert.ok(twice.every((jid) => (starts.get(jid)?.length ?? 0) <= 2), 'a job ran more than twice')
    // Only the jobs in flight at the switch may run again: at most one per worker thread.
    assert.ok(twice.length <= CONCURRENCY, `jobs run twice: ${twice.length} (more than the ${CONCURRENCY} threads could have had in flight)`)
    assert.ok(writesLost.length <= CONCURRENCY, `completed jobs whose writes are lost: ${writesLost.length}`)
  } finally {
    if (sidekiq.exitCode === null && sidekiq.signalCode === null) {
      sidekiq.kill('SIGKILL')
      await exited
    }
    children.delete(sidekiq)
  }
})
