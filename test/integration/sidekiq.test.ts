import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startBoundedRedis, type BoundedRedis } from '../helpers/bounded-redis.js'
import { enqueueJobs, sidekiqCommand, until } from '../helpers/sidekiq.js'
import { startProxy } from '../helpers/proxy.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// The use case respool was written for: a Sidekiq 6.4 process (Debian ruby-sidekiq) with 25
// worker threads, each fetching with BRPOP (2 s timeout) on its own client connection, through
// respool with --pool-size 4 (so at most 3 pins). Every fetcher pins while it blocks, so the
// pins are saturated the whole time; jobs must still all run, each exactly once, and Redis must
// never see more than 4 connections from respool: it runs with --maxclients 5 (the pool and this
// test's one admin connection), so one connection more is refused and counted.

const POOL_SIZE = 4
const MAX_PINS = POOL_SIZE - 1
/** Blocking commands may hold all pins but one: the last stays free for the heartbeat's MULTI. */
const MAX_BLOCKING_PINS = MAX_PINS - 1
const CONCURRENCY = 25
const FIRST_WAVE = 300
const SECOND_WAVE = 20
const DB = 1

let bounded: BoundedRedis
let proxy: ProxyServer
let workDir: string
let admin: Redis
const children = new Set<ChildProcess>()

before(async () => {
  bounded = await startBoundedRedis(POOL_SIZE + 1)
  admin = bounded.admin
  await admin.select(DB)
  // No idle connection is closed and replaced during the run: Redis may not have freed a
  // closed one yet when its replacement arrives, which is not a connection more.
  proxy = await startProxy({ upstream: bounded.redis.url, poolSize: POOL_SIZE, upstreamIdleTimeoutMs: 600_000 })
  workDir = await mkdtemp(path.join(tmpdir(), 'respool-sidekiq-'))
})
after(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  await proxy?.destroy()
  await bounded?.stop()
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true })
})

const WORKER = `
require 'sidekiq'
# redis-rb 4.8 warns about Sidekiq 6.4's positional BRPOP timeout and SADD's return value.
Redis.silence_deprecations = true

class CountingJob
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(n)
    Sidekiq.redis do |c|
      c.hincrby('runs', n.to_s, 1)
      c.sadd('seen', n.to_s)
      c.sadd('jids', jid)
      c.incr('done')
    end
  end
end
`

async function blockedClients (): Promise<number> {
  const info = await admin.info('clients')
  return Number(/blocked_clients:(\d+)/.exec(info)?.[1] ?? 0)
}

/** Clients respool shows as blocked (CLIENT LIST flags=b): parked, or blocked on a pin. */
function waitingFetchers (): number {
  return proxy.sessions().filter((session) => session.view().flags === 'b').length
}

async function enqueue (env: NodeJS.ProcessEnv, from: number, to: number): Promise<string[]> {
  return await enqueueJobs(workDir, env, from, to)
}

test(`Sidekiq 6.4 with ${CONCURRENCY} threads through respool --pool-size ${POOL_SIZE}: every job runs exactly once, heartbeats keep working, Redis sees at most ${POOL_SIZE} connections`, { timeout: 120000 }, async () => {
  await writeFile(path.join(workDir, 'worker.rb'), WORKER)
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: `redis://127.0.0.1:${proxy.address.port}/${DB}` }
  delete env.REDIS_PROVIDER

  // Sample what Redis sees for the whole run.
  let maxUpstream = 0
  let maxBlocked = 0
  let samples = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const [up, blocked] = await Promise.all([bounded.upstreamConnections(), blockedClients()])
      maxUpstream = Math.max(maxUpstream, up)
      maxBlocked = Math.max(maxBlocked, blocked)
      samples++
      await delay(50)
    }
  })()

  const [program, prefix] = sidekiqCommand()
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

  let exitCode: number | null = null
  let exitSignal: NodeJS.Signals | null = null
  try {
    // Booted: more fetchers wait in BRPOP on an empty queue than respool could pin (they are
    // parked inside respool; Redis sees one watcher connection at most).
    await until(async () => waitingFetchers() > MAX_BLOCKING_PINS, 'Sidekiq fetchers to wait in BRPOP', 30000, died)

    const jids = await enqueue(env, 1, FIRST_WAVE)
    await until(async () => Number(await admin.get('done')) >= FIRST_WAVE, `${FIRST_WAVE} jobs to run`, 60000, died)

    // Idle again, fetchers waiting in BRPOPs that time out every 2 s: new jobs still get picked up.
    await until(async () => waitingFetchers() > MAX_BLOCKING_PINS, 'the idle fetchers to wait again', 20000, died)
    jids.push(...await enqueue(env, FIRST_WAVE + 1, FIRST_WAVE + SECOND_WAVE))
    const total = FIRST_WAVE + SECOND_WAVE
    await until(async () => Number(await admin.get('done')) >= total, `${total} jobs to run`, 30000, died)

    // Stay idle with every pin held by a 2 s BRPOP and 22 more fetchers queueing for pins.
    // Sidekiq's heartbeat (every 5 s: MULTI/EXEC, PING, MULTI/EXEC; the transactions need a
    // pin too) must still get through, as it does against Redis directly. Wait for two
    // heartbeats that start well inside that idle phase, whether they succeed (the process
    // hash's `beat` moves) or fail (Sidekiq logs `ERROR: heartbeat: …`, checked below).
    const countedFrom = Date.now() / 1000 + 2.5
    const beats = new Set<number>()
    let failuresBefore = -1
    const heartbeatFailures = (): number => (log.match(/ERROR: heartbeat:/g) ?? []).length
    await until(async () => {
      if (failuresBefore < 0 && Date.now() / 1000 >= countedFrom) failuresBefore = heartbeatFailures()
      const [processKey] = await admin.smembers('processes')
      if (processKey !== undefined) {
        const beat = Number(await admin.hget(processKey, 'beat'))
        if (beat > countedFrom) beats.add(beat)
      }
      const failures = failuresBefore < 0 ? 0 : heartbeatFailures() - failuresBefore
      return beats.size + failures >= 2
    }, 'two Sidekiq heartbeats while the pins are saturated', 30000, died)

    // Stop Sidekiq the way a deployment does; it waits for its fetchers (≤ 2 s BRPOPs).
    sidekiq.kill('SIGTERM')
    const killer = setTimeout(() => { sidekiq.kill('SIGKILL') }, 20000)
    try {
      [exitCode, exitSignal] = await exited
    } finally {
      clearTimeout(killer)
    }
    children.delete(sidekiq)

    sampling = false
    await sampler

    // Every job ran exactly once.
    assert.equal(Number(await admin.get('done')), total)
    const runs = await admin.hgetall('runs')
    assert.equal(Object.keys(runs).length, total)
    const twice = Object.entries(runs).filter(([, count]) => count !== '1')
    assert.deepEqual(twice, [], 'jobs that ran more than once')
    assert.equal(await admin.scard('seen'), total)
    const ranJids = (await admin.smembers('jids')).sort()
    assert.deepEqual(ranJids, [...jids].sort())
    assert.equal(await admin.llen('queue:default'), 0)
    // Nothing was written to db 0: every connection, shared or pinned, used the URL's database.
    assert.doesNotMatch(await admin.info('keyspace'), /^db0:/m)

    assert.ok(samples > 10, `only ${samples} samples taken`)
    assert.ok(maxUpstream >= 1 && maxUpstream <= POOL_SIZE, `upstream connections seen by Redis: ${maxUpstream}`)
    await bounded.assertNoneRejected()
    // Parked fetchers cost Redis one watcher connection, blocked on their queue's key.
    assert.ok(maxBlocked <= 1, `blocked clients seen by Redis: ${maxBlocked}`)
    assert.ok(proxy.pool.stats.size <= POOL_SIZE)

    assert.equal(exitCode, 0, `sidekiq exit ${String(exitCode ?? exitSignal)}:\n${log}`)
    assert.match(log, /Bye!/)
    // No fetch errors, heartbeat errors, pool timeouts or failed jobs while the pins were
    // saturated (against Redis directly this log has none).
    const errorLines = log.split('\n').filter((l) => /\b(ERROR|FATAL)\b|Error fetching job|ConnectionPool::TimeoutError|Redis::\w*Error/.test(l))
    const logWithoutJobs = log.split('\n').filter((l) => !/class=CountingJob/.test(l)).join('\n')
    assert.deepEqual(errorLines, [], `sidekiq log (job lines left out):\n${logWithoutJobs}`)
  } finally {
    sampling = false
    await sampler
    if (sidekiq.exitCode === null && sidekiq.signalCode === null) {
      sidekiq.kill('SIGKILL')
      await exited
    }
    children.delete(sidekiq)
  }
})
