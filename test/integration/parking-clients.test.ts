import { test, after, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startBoundedRedis, type BoundedRedis } from '../helpers/bounded-redis.js'
import { sidekiqCommand } from '../helpers/sidekiq.js'
import { startProxy } from '../helpers/proxy.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Parked blocking commands under real clients: redis-rb locks and semaphores, Sidekiq 6.4 with
 * 100 fetcher threads, an ioredis BLMOVE reliable queue and redis-py threads in BLPOP, each
 * through respool with --park-blocking yes and a pool of 4. The waiters far outnumber the
 * connections: Redis runs with --maxclients 5 (the pool and this test's one admin connection),
 * so a waiter that held a connection of its own would be refused, and Redis counts the refusal.
 * Every test waits until respool has all its waiters parked at once (a pinned wait could have
 * at most two), looks at what Redis sees then and throughout, and checks every result exactly.
 * Two `todo` tests pin down where a parked waiter still differs from Redis: a push that lands
 * while the watcher holds the element it took to learn that a key has data.
 */

const POOL = 4
const LIMIT = POOL + 1
/** Blocked clients Redis may see: the one watcher (one database, lists only) of each test. */
const MAX_BLOCKED_UPSTREAM = 1

interface Rig {
  bounded: BoundedRedis
  admin: Redis
  proxy: ProxyServer
}

const children = new Set<ChildProcess>()
const clients = new Set<Redis>()
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  for (const c of clients) c.disconnect()
})

/** A Redis that refuses a sixth connection, and respool in front of it; both stop after the test. */
async function rig (t: TestContext): Promise<Rig> {
  const bounded = await startBoundedRedis(LIMIT)
  let proxy: ProxyServer | undefined
  t.after(async () => {
    await proxy?.destroy()
    await bounded.stop()
  })
  // No idle connection is closed and replaced during a test: Redis may not have freed a
  // closed one yet when its replacement arrives, which is not a connection more.
  proxy = await startProxy({ upstream: bounded.redis.url, poolSize: POOL, parkBlocking: true, upstreamIdleTimeoutMs: 600_000 })
  return { bounded, admin: bounded.admin, proxy }
}

function parked (r: Rig): number {
  return r.proxy.parking?.stats.parked ?? 0
}

/** Waits until respool has exactly `n` waiters parked (Redis sees none of them). */
async function allParked (r: Rig, n: number, timeoutMs = 10000): Promise<void> {
  await waitFor(() => parked(r) === n, `${n} parked waiters (have ${parked(r)}${r.proxy.parking === null ? ', parking is off' : ''})`, timeoutMs)
}

async function clientsInfo (r: Rig): Promise<{ connected: number, blocked: number }> {
  const info = await r.admin.info('clients')
  return {
    connected: Number(/connected_clients:(\d+)/.exec(info)?.[1]),
    blocked: Number(/blocked_clients:(\d+)/.exec(info)?.[1])
  }
}

/** What Redis sees right now, while `waiters` clients wait: the pool, the admin and one watcher. */
async function assertBoundedNow (r: Rig, waiters: number): Promise<void> {
  const now = await clientsInfo(r)
  assert.ok(now.connected <= LIMIT, `${now.connected} connections in Redis while ${waiters} clients wait (pool ${POOL} + admin)`)
  assert.ok(now.blocked <= MAX_BLOCKED_UPSTREAM, `${now.blocked} blocked clients in Redis while ${waiters} clients wait`)
  assert.ok(r.proxy.pool.stats.size <= POOL, `respool's pool has ${r.proxy.pool.stats.size} connections`)
}

interface Peaks { connected: number, blocked: number, parked: number, samples: number }

/** Samples what Redis sees (and respool's parked count) until stopped; then checks the bound. */
function sampleUpstream (r: Rig): { stop: () => Promise<Peaks> } {
  const peaks: Peaks = { connected: 0, blocked: 0, parked: 0, samples: 0 }
  let running = true
  // Ends on its own if Redis goes away first (a test that failed early): never a stray rejection.
  const loop = (async (): Promise<Error | null> => {
    try {
      while (running) {
        const now = await clientsInfo(r)
        peaks.connected = Math.max(peaks.connected, now.connected)
        peaks.blocked = Math.max(peaks.blocked, now.blocked)
        peaks.parked = Math.max(peaks.parked, parked(r))
        peaks.samples++
        await delay(20)
      }
      return null
    } catch (err) {
      return err as Error
    }
  })()
  return {
    async stop () {
      running = false
      const err = await loop
      if (err !== null) throw err
      assert.ok(peaks.samples >= 3, `only ${peaks.samples} samples of Redis's clients`)
      assert.ok(peaks.connected <= LIMIT, `Redis saw ${peaks.connected} connections (pool ${POOL} + admin)`)
      assert.ok(peaks.blocked <= MAX_BLOCKED_UPSTREAM, `Redis saw ${peaks.blocked} blocked clients`)
      await r.bounded.assertNoneRejected()
      return peaks
    }
  }
}

/**
 * A client program (ruby -e, python3 -c) whose stdout lines are read as they come, and which
 * reads `go` on stdin when it prints `ready …`: the test checks respool and Redis in between.
 */
class Program {
  readonly lines: string[] = []
  readonly child: ChildProcess
  #stderr = ''
  #partial = ''
  readonly #exited: Promise<[number | null, NodeJS.Signals | null]>

  constructor (program: string, args: string[], options: { cwd?: string, env?: NodeJS.ProcessEnv, timeoutMs: number }) {
    this.child = spawn(program, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] })
    children.add(this.child)
    this.child.stdout?.on('data', (d: Buffer) => {
      const parts = (this.#partial + d.toString()).split('\n')
      this.#partial = parts.pop() ?? ''
      this.lines.push(...parts.filter((l) => l !== ''))
    })
    this.child.stderr?.on('data', (d: Buffer) => { this.#stderr += d.toString() })
    this.child.stdin?.on('error', () => {})
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, options.timeoutMs)
    this.#exited = new Promise((resolve, reject) => {
      this.child.on('error', reject)
      this.child.on('close', (code, signal) => {
        clearTimeout(timer)
        children.delete(this.child)
        if (this.#partial !== '') this.lines.push(this.#partial)
        resolve([code, signal])
      })
    })
  }

  get output (): string {
    return `stdout:\n${this.lines.join('\n')}\nstderr:\n${this.#stderr}`
  }

  get running (): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Waits for a line matching `re` (failing at once if the program exits first). */
  async line (re: RegExp, timeoutMs = 15000): Promise<string> {
    await waitFor(() => {
      if (this.lines.some((l) => re.test(l))) return true
      if (!this.running) throw new Error(`the program exited before printing ${String(re)}\n${this.output}`)
      return false
    }, `a line matching ${String(re)}`, timeoutMs)
    return this.lines.find((l) => re.test(l)) as string
  }

  go (): void {
    this.child.stdin?.write('go\n')
  }

  /** Its stdout lines once it exits; fails unless it exits 0. */
  async finish (): Promise<string[]> {
    const [code, signal] = await this.#exited
    assert.equal(code, 0, `exited ${String(code ?? signal)}\n${this.output}`)
    return this.lines
  }
}

// ---- redis-rb -----------------------------------------------------------------------------

const RUBY_PRELUDE = `
require 'redis'
require 'json'
require 'securerandom'
$stdout.sync = true
PORT = Integer(ARGV[0])

def client
  Redis.new(host: '127.0.0.1', port: PORT, timeout: 30, connect_timeout: 5)
end

# Prints "ready <what>" and waits for the test to answer "go".
def ready(what)
  puts "ready #{what}"
  line = $stdin.gets
  raise "no go after #{what}: #{line.inspect}" unless line&.strip == 'go'
end

def js(value)
  JSON.generate(value)
end
`

function ruby (r: Rig, script: string, timeoutMs = 25000): Program {
  return new Program('ruby', ['-e', RUBY_PRELUDE + script, String(r.proxy.address.port)], { timeoutMs })
}

test('redis-rb lock (SET NX PX, Lua compare-and-delete, BLPOP wake-up): 20 threads, 200 critical sections, never two holders', { timeout: 30000 }, async (t) => {
  const r = await rig(t)
  const THREADS = 20
  const ROUNDS = 10
  const sampler = sampleUpstream(r)
  const program = ruby(r, `
THREADS = ${THREADS}
ROUNDS = ${ROUNDS}
LOCK = 'lock:resource'
WAKE = 'lock:released'
# Releases the lock only for the token that holds it, and leaves one wake-up for a waiter.
RELEASE = <<~LUA
  if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('DEL', KEYS[2])
    redis.call('RPUSH', KEYS[2], '1')
    return 1
  end
  return 0
LUA

stats = Mutex.new
timeouts = 0
wakeups = 0
violations = []
lost = []
errors = []

main = client
first = SecureRandom.hex(16)
puts "main acquires #{main.set(LOCK, first, nx: true, px: 30_000)}"

threads = (0...THREADS).map do |n|
  Thread.new do
    c = client
    ROUNDS.times do |round|
      token = SecureRandom.hex(16)
      until c.set(LOCK, token, nx: true, px: 10_000)
        woke = c.blpop(WAKE, timeout: 5)
        stats.synchronize { woke.nil? ? timeouts += 1 : wakeups += 1 }
      end
      inside = c.incr('lock:inside')
      stats.synchronize { violations << [n, round, inside] } unless inside == 1
      value = c.get('lock:counter').to_i
      sleep 0.001
      c.set('lock:counter', value + 1)
      c.decr('lock:inside')
      released = c.eval(RELEASE, keys: [LOCK, WAKE], argv: [token])
      stats.synchronize { lost << [n, round] } unless released == 1
    end
    c.close
  rescue => e
    stats.synchronize { errors << "#{n}: #{e.inspect}" }
  end
end

# Every thread found the lock held and waits for its release.
ready("#{THREADS} contenders")
puts "main releases #{main.eval(RELEASE, keys: [LOCK, WAKE], argv: [first])}"
threads.each(&:join)
puts "counter #{main.get('lock:counter')}"
puts "inside #{main.get('lock:inside')}"
puts "violations #{js(violations)}"
puts "lost #{js(lost)}"
puts "errors #{js(errors)}"
puts "lock #{main.get(LOCK).inspect}"
puts "wait stats #{wakeups} #{timeouts}"
`)
  try {
    await program.line(/^ready /)
    await allParked(r, THREADS)
    await assertBoundedNow(r, THREADS)
    program.go()
    const lines = await program.finish()
    const peaks = await sampler.stop()
    const [wakeups, timeouts] = (lines.find((l) => l.startsWith('wait stats ')) ?? '').split(' ').slice(2).map(Number)
    t.diagnostic(`${wakeups} BLPOP wake-ups, ${timeouts} timeouts; at most ${peaks.parked} parked, ${peaks.connected} connections in Redis`)
    // Each release leaves one wake-up element, taken at most once.
    assert.ok(wakeups >= 1 && wakeups <= THREADS * ROUNDS + 1, `${wakeups} wake-ups for ${THREADS * ROUNDS + 1} releases`)
    assert.deepEqual(lines.filter((l) => !l.startsWith('wait stats ')), [
      'main acquires true',
      'ready 20 contenders',
      'main releases 1',
      `counter ${THREADS * ROUNDS}`,
      'inside 0',
      'violations []',
      'lost []',
      'errors []',
      'lock nil'
    ])
  } finally {
    if (program.running) program.child.kill('SIGKILL')
  }
})

test('redis-rb BLPOP semaphore: 3 tokens, 32 threads twice each, never more than 3 holders, every token back', { timeout: 30000 }, async (t) => {
  const r = await rig(t)
  const K = 3
  const THREADS = 32
  const ROUNDS = 2
  const sampler = sampleUpstream(r)
  const program = ruby(r, `
K = ${K}
THREADS = ${THREADS}
ROUNDS = ${ROUNDS}
AVAILABLE = 'sem:available'
TOKENS = (1..K).map { |i| "token-#{i}" }
main = client
main.rpush(AVAILABLE, TOKENS)

lock = Mutex.new
opened = ConditionVariable.new
go = false
held = []
timeouts = []
errors = []

threads = (0...THREADS).map do |n|
  Thread.new do
    c = client
    ROUNDS.times do |round|
      got = c.blpop(AVAILABLE, timeout: 5)
      if got.nil?
        lock.synchronize { timeouts << [n, round] }
        next
      end
      holders = c.incr('sem:holders')
      lock.synchronize do
        held << [n, round, got[0], got[1], holders]
        # The first holders keep their tokens until every other thread waits for one.
        opened.wait(lock) until go
      end
      sleep 0.01
      c.decr('sem:holders')
      c.rpush(AVAILABLE, got[1])
    end
    c.close
  rescue => e
    lock.synchronize { errors << "#{n}: #{e.inspect}" }
  end
end

ready("#{THREADS - K} waiters")
lock.synchronize { go = true; opened.broadcast }
threads.each(&:join)
puts "held #{held.size} by #{held.map(&:first).uniq.size} threads"
puts "keys #{js(held.map { |h| h[2] }.uniq)}"
puts "tokens #{js(held.map { |h| h[3] }.uniq.sort)}"
puts "max holders #{held.map(&:last).max}"
puts "timeouts #{js(timeouts)}"
puts "errors #{js(errors)}"
puts "holders now #{main.get('sem:holders')}"
puts "available #{js(main.lrange(AVAILABLE, 0, -1).sort)}"
`)
  try {
    await program.line(/^ready /)
    await allParked(r, THREADS - K)
    await assertBoundedNow(r, THREADS - K)
    program.go()
    const lines = await program.finish()
    const peaks = await sampler.stop()
    t.diagnostic(`at most ${peaks.parked} parked, ${peaks.connected} connections in Redis`)
    const tokens = JSON.stringify(Array.from({ length: K }, (_, i) => `token-${i + 1}`))
    assert.deepEqual(lines, [
      `ready ${THREADS - K} waiters`,
      `held ${THREADS * ROUNDS} by ${THREADS} threads`,
      'keys ["sem:available"]',
      `tokens ${tokens}`,
      `max holders ${K}`,
      'timeouts []',
      'errors []',
      'holders now 0',
      `available ${tokens}`
    ])
    assert.equal(await r.admin.llen('sem:available'), K)
  } finally {
    if (program.running) program.child.kill('SIGKILL')
  }
})

// ---- Sidekiq ------------------------------------------------------------------------------

const SIDEKIQ_WORKER = `
require 'sidekiq'
# redis-rb 4.8 warns about Sidekiq 6.4's positional BRPOP timeout and SADD's return value.
Redis.silence_deprecations = true

class CountingJob
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(n)
    Sidekiq.redis do |c|
      c.hincrby('runs', n.to_s, 1)
      c.sadd('jids', jid)
      c.sadd('threads', Thread.current.object_id.to_s)
      c.incr('done')
    end
  end
end
`

const SIDEKIQ_ENQUEUE = `
require 'sidekiq'
require 'json'
jids = Sidekiq::Client.push_bulk('class' => 'CountingJob', 'args' => (1..Integer(ARGV[0])).map { |i| [i] })
puts JSON.generate(jids)
`

test('Sidekiq 6.4 with 100 threads over a pool of 4: 100 fetchers parked in BRPOP, 300 jobs each run exactly once', { timeout: 40000 }, async (t) => {
  const r = await rig(t)
  const CONCURRENCY = 100
  const JOBS = 300
  const DB = 2
  await r.admin.select(DB)
  const workDir = await mkdtemp(path.join(tmpdir(), 'respool-parking-sidekiq-'))
  t.after(async () => { await rm(workDir, { recursive: true, force: true }) })
  await writeFile(path.join(workDir, 'worker.rb'), SIDEKIQ_WORKER)
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: `redis://127.0.0.1:${r.proxy.address.port}/${DB}` }
  delete env.REDIS_PROVIDER

  const sampler = sampleUpstream(r)
  const [program, prefix] = sidekiqCommand()
  const sidekiq = new Program(program, [...prefix, '-r', './worker.rb', '-c', String(CONCURRENCY), '-t', '8', '-q', 'default'], { cwd: workDir, env, timeoutMs: 38000 })
  const died = (): void => {
    if (!sidekiq.running) throw new Error(`sidekiq exited early\n${sidekiq.output}`)
  }
  try {
    // Booted and idle: every fetcher waits in BRPOP (2 s timeout, then again) inside respool.
    await waitFor(() => { died(); return parked(r) === CONCURRENCY }, `${CONCURRENCY} parked fetchers (have ${parked(r)})`, 20000)
    await assertBoundedNow(r, CONCURRENCY)

    const enqueue = new Program('ruby', ['-e', SIDEKIQ_ENQUEUE, String(JOBS)], { cwd: workDir, env, timeoutMs: 15000 })
    const jids = JSON.parse((await enqueue.finish()).join('')) as string[]
    assert.equal(jids.length, JOBS)
    await waitFor(async () => { died(); return Number(await r.admin.get('done')) >= JOBS }, `${JOBS} jobs to run`, 20000)

    sidekiq.child.kill('SIGTERM')
    await sidekiq.finish()
    const peaks = await sampler.stop()

    assert.equal(Number(await r.admin.get('done')), JOBS)
    const runs = await r.admin.hgetall('runs')
    assert.equal(Object.keys(runs).length, JOBS)
    assert.deepEqual(Object.entries(runs).filter(([, count]) => count !== '1'), [], 'jobs that ran more than once')
    assert.deepEqual((await r.admin.smembers('jids')).sort(), [...jids].sort())
    assert.equal(await r.admin.llen('queue:default'), 0)
    const threads = await r.admin.scard('threads')
    t.diagnostic(`jobs ran on ${threads} Sidekiq threads; at most ${peaks.parked} parked, ${peaks.connected} connections and ${peaks.blocked} blocked clients in Redis`)
    const log = sidekiq.output
    assert.match(log, /Bye!/)
    const errorLines = log.split('\n').filter((l) => /\b(ERROR|FATAL)\b|Error fetching job|ConnectionPool::TimeoutError|Redis::\w*Error/.test(l))
    assert.deepEqual(errorLines, [], `sidekiq log (job lines left out):\n${log.split('\n').filter((l) => !/class=CountingJob/.test(l)).join('\n')}`)
  } finally {
    if (sidekiq.running) sidekiq.child.kill('SIGKILL')
  }
})

// ---- ioredis ------------------------------------------------------------------------------

function ioredis (r: Rig): Redis {
  const c = new Redis({ port: r.proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null })
  clients.add(c)
  return c
}

test('ioredis reliable queue: 8 consumers in BLMOVE queue → processing:<consumer>, 500 items each processed exactly once', { timeout: 30000 }, async (t) => {
  const r = await rig(t)
  const CONSUMERS = 8
  const ITEMS = 500
  const consumers = Array.from({ length: CONSUMERS }, () => ioredis(r))
  const producer = ioredis(r)
  t.after(() => { for (const c of [...consumers, producer]) { c.disconnect(); clients.delete(c) } })
  const processed = new Map<string, string[]>()
  const lremFailures: string[] = []
  let timeouts = 0

  // Each consumer moves an item to its own processing list, handles it, then removes it from
  // there; a `stop` item ends it (one per consumer, pushed once every item is processed).
  const consume = async (c: Redis, name: string): Promise<void> => {
    const processing = `rq:processing:${name}`
    for (;;) {
      const item = await c.blmove('rq:queue', processing, 'RIGHT', 'LEFT', 1)
      if (item === null) {
        timeouts++
        continue
      }
      processed.set(item, [...(processed.get(item) ?? []), name])
      const removed = await c.lrem(processing, 1, item)
      if (removed !== 1) lremFailures.push(`${name} ${item} ${removed}`)
      if (item.startsWith('stop:')) return
    }
  }
  const sampler = sampleUpstream(r)
  const running = consumers.map(async (c, i) => { await consume(c, `c${i}`) })
  await allParked(r, CONSUMERS)
  await assertBoundedNow(r, CONSUMERS)

  // Pushed one to five at a time, each push awaited: the watcher wakes the consumers again and again.
  let next = 0
  while (next < ITEMS) {
    const n = Math.min(ITEMS - next, 1 + (next % 5))
    await producer.lpush('rq:queue', ...Array.from({ length: n }, (_, i) => `item:${next + i}`))
    next += n
  }
  try {
    await waitFor(() => processed.size >= ITEMS, `${ITEMS} items processed`, 10000)
  } catch (err) {
    const where: string[] = []
    for (const key of await r.admin.keys('rq:*')) where.push(`${key}: ${JSON.stringify(await r.admin.lrange(key, 0, -1))}`)
    throw new Error(`${(err as Error).message}: ${processed.size} processed; in Redis: ${where.join('; ')}`)
  }
  await producer.lpush('rq:queue', ...Array.from({ length: CONSUMERS }, (_, i) => `stop:${i}`))
  await Promise.all(running)
  const peaks = await sampler.stop()

  const expected = [...Array.from({ length: ITEMS }, (_, i) => `item:${i}`), ...Array.from({ length: CONSUMERS }, (_, i) => `stop:${i}`)]
  assert.deepEqual([...processed.keys()].sort(), expected.sort())
  assert.deepEqual([...processed].filter(([, by]) => by.length !== 1), [], 'items processed more than once')
  const stoppedBy = new Set([...processed].filter(([item]) => item.startsWith('stop:')).map(([, by]) => by[0]))
  assert.equal(stoppedBy.size, CONSUMERS, 'each consumer took one stop item')
  assert.deepEqual(lremFailures, [])
  assert.equal(await r.admin.llen('rq:queue'), 0)
  assert.deepEqual(await r.admin.keys('rq:*'), [], 'queue and processing lists are empty')
  const perConsumer = consumers.map((_, i) => [...processed.values()].filter((by) => by[0] === `c${i}`).length)
  t.diagnostic(`items per consumer ${perConsumer.join(' ')}; ${timeouts} BLMOVE timeouts; at most ${peaks.parked} parked, ${peaks.connected} connections in Redis`)
})

// The watcher learns that a key has data by taking an element (BLPOP/BRPOP, BZPOPMIN) and puts it
// back in its wake-up transaction. Pushes that land in between must not reorder a list (the
// watcher takes from, and puts back at, the end the waiter takes from) nor lose a sorted-set
// member (the put-back never overwrites a newer score).
/** One waiter parked, and the watcher waiting for its key in Redis. */
async function watcherBlocked (r: Rig): Promise<void> {
  await allParked(r, 1)
  await waitFor(async () => (await clientsInfo(r)).blocked === 1, 'the watcher blocked in Redis')
}

test('LPUSH x1, LPUSH x2 (one write, straight to Redis) to a parked BLMOVE RIGHT: it gets x1 and x2 stays, as in Redis', { timeout: 10000 }, async (t) => {
  const r = await rig(t)
  const waiter = ioredis(r)
  t.after(() => { waiter.disconnect(); clients.delete(waiter) })
  const got = waiter.blmove('fifo:queue', 'fifo:processing', 'RIGHT', 'LEFT', 5)
  await watcherBlocked(r)
  await r.admin.pipeline().lpush('fifo:queue', 'x1').lpush('fifo:queue', 'x2').exec()
  assert.equal(await got, 'x1')
  assert.deepEqual(await r.admin.lrange('fifo:queue', 0, -1), ['x2'])
})

test('ZADD m 1, ZADD m 5 (one write, straight to Redis) to a parked BZPOPMIN: nothing is lost, and the outcome is one Redis can give', { timeout: 10000 }, async (t) => {
  const r = await rig(t)
  const waiter = ioredis(r)
  t.after(() => { waiter.disconnect(); clients.delete(waiter) })
  const got = waiter.bzpopmin('fifo:zset', 5)
  await watcherBlocked(r)
  await r.admin.pipeline().zadd('fifo:zset', 1, 'm').zadd('fifo:zset', 5, 'm').exec()
  const reply = await got
  const left = await r.admin.zrange('fifo:zset', '0', '-1', 'WITHSCORES')
  // Served right after the first ZADD (as a directly blocked client is): m 1, and m stays with
  // score 5. Served after both (as a client whose BZPOPMIN arrived a moment later): m 5, and the
  // set is empty. Anything else (m gone for good, or a score nobody wrote) is a bug.
  assert.ok((JSON.stringify(reply) === JSON.stringify(['fifo:zset', 'm', '1']) && JSON.stringify(left) === JSON.stringify(['m', '5'])) ||
    (JSON.stringify(reply) === JSON.stringify(['fifo:zset', 'm', '5']) && left.length === 0), `got ${JSON.stringify(reply)}, left ${JSON.stringify(left)}`)
})

// ---- redis-py -----------------------------------------------------------------------------

const PYTHON = '/usr/bin/python3'

test('redis-py: 60 threads in BLPOP (own keys, and a shared key behind an empty one), pushes from another client: each waiter gets its element', { timeout: 30000 }, async (t) => {
  const r = await rig(t)
  const OWN = 30
  const SHARED = 30
  const sampler = sampleUpstream(r)
  const program = new Program(PYTHON, ['-c', `
import sys, json, threading, redis
PORT = int(sys.argv[1])
OWN, SHARED = ${OWN}, ${SHARED}

def client():
    return redis.Redis(host='127.0.0.1', port=PORT, decode_responses=True, socket_timeout=30, socket_connect_timeout=5)

def out(*values):
    print(*values, flush=True)

# One client (one connection pool) shared by every waiter thread: a connection each.
r = client()
results = {}
errors = []
def waiter(n, keys):
    try:
        results[n] = r.blpop(keys, timeout=10)
    except Exception as e:
        errors.append('%d: %r' % (n, e))

threads = [threading.Thread(target=waiter, args=(n, ['py:own:%d' % n])) for n in range(OWN)]
threads += [threading.Thread(target=waiter, args=(OWN + n, ['py:empty:%d' % n, 'py:shared'])) for n in range(SHARED)]
for th in threads: th.start()
out('ready', OWN + SHARED)
if sys.stdin.readline().strip() != 'go':
    raise Exception('no go')

pusher = client()
p = pusher.pipeline(transaction=False)
for n in reversed(range(OWN)):
    p.rpush('py:own:%d' % n, 'own-%d' % n)
p.execute()
for i in range(0, SHARED, 5):
    pusher.rpush('py:shared', *['shared-%d' % j for j in range(i, i + 5)])
for th in threads: th.join()

out('own', all(list(results.get(n) or []) == ['py:own:%d' % n, 'own-%d' % n] for n in range(OWN)))
shared = [results.get(OWN + n) for n in range(SHARED)]
out('shared keys', sorted(set(v[0] if v else None for v in shared), key=str))
out('shared values', sorted(v[1] for v in shared if v) == sorted('shared-%d' % j for j in range(SHARED)))
out('missing', json.dumps([n for n in range(OWN + SHARED) if results.get(n) is None]))
out('errors', json.dumps(errors))
out('left', sum(pusher.llen(k) for k in ['py:shared'] + ['py:own:%d' % n for n in range(OWN)]))
`, String(r.proxy.address.port)], { timeoutMs: 25000 })
  try {
    await program.line(/^ready /)
    await allParked(r, OWN + SHARED)
    await assertBoundedNow(r, OWN + SHARED)
    program.go()
    const lines = await program.finish()
    const peaks = await sampler.stop()
    t.diagnostic(`at most ${peaks.parked} parked, ${peaks.connected} connections in Redis`)
    assert.deepEqual(lines, [
      `ready ${OWN + SHARED}`,
      'own True',
      "shared keys ['py:shared']",
      'shared values True',
      'missing []',
      'errors []',
      'left 0'
    ])
    assert.deepEqual(await r.admin.keys('py:*'), [])
  } finally {
    if (program.running) program.child.kill('SIGKILL')
  }
})
