import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { runScript, step, showFrames, type Step } from '../helpers/script.js'
import { prng } from '../helpers/prng.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Blocking commands parked inside respool: they wait without a connection each, and get
 * exactly what Redis would give them. Direct Redis runs the same scripts for comparison.
 */

const POOL = 8
let direct: RedisServer
let upstream: RedisServer
let proxy: ProxyServer

before(async () => {
  direct = await startRedis()
  // The pool and this test's own direct connections (an admin and a pusher at a time) are all
  // Redis lets in: a waiter that held a connection of its own would fail hard.
  upstream = await startRedis(['--maxclients', String(POOL + 3)])
  proxy = await startProxy({ upstream: upstream.url, poolSize: POOL, parkBlocking: true })
})

after(async () => {
  await proxy?.destroy()
  await upstream?.stop()
  await direct?.stop()
})

const on = commandOn

/** Waits until respool has `n` parked waiters (Redis itself is not asked: it sees none of them). */
async function parked (n: number): Promise<void> {
  await waitFor(() => proxy.parking?.stats.parked === n, `${n} parked waiters (have ${proxy.parking?.stats.parked ?? 0})`, 10000)
}

test('200 semaphore waiters over a pool of 8: every pushed token wakes its waiter at once, the others time out with Redis\'s reply', { timeout: 60000 }, async (t) => {
  const N = 200
  const clients = await Promise.all(Array.from({ length: N }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  const frames = clients.map((c) => new FrameReader(c))
  clients.forEach((c, i) => { c.write(cmd('BLPOP', `sem:${i}`, '3')) })
  await parked(N)
  // Visible as Redis shows blocked clients, in RESPOOL POOLS and in the metrics.
  const list = await on(proxy.address.port, 'CLIENT', 'LIST')
  assert.equal(list.match(/ flags=b .* cmd=blpop /g)?.length, N, 'CLIENT LIST: every parked client flags=b cmd=blpop')
  const pools = await on(proxy.address.port, 'RESPOOL', 'POOLS')
  assert.match(pools, new RegExp(`\r\nparked:${N}\r\nparked_watchers:1\r\nparked_tracking:idle\r\nparked_tracked_keys:0\r\nparked_blpop:${N}\r\n`))
  const metrics = await proxy.metrics.registry.metrics()
  assert.match(metrics, new RegExp(`\nrespool_parked_commands\\{command="blpop"\\} ${N}\n`))
  const rnd = prng(0x5e3a)
  const chosen = [...Array(N).keys()].filter(() => rnd() < 0.5)
  const pusher = await RawClient.connect(upstream.port)
  after(() => { pusher.close() })
  const pushedAt = new Map<number, number>()
  for (const i of chosen.sort(() => rnd() - 0.5)) {
    pushedAt.set(i, performance.now())
    pusher.write(cmd('RPUSH', `sem:${i}`, 'token'))
  }
  const latencies: number[] = []
  await Promise.all(frames.map(async (f, i) => {
    const reply = await f.next(10000)
    if (pushedAt.has(i)) {
      assert.equal(reply, `*2\r\n$${`sem:${i}`.length}\r\nsem:${i}\r\n$5\r\ntoken\r\n`, `waiter ${i}`)
      latencies.push(performance.now() - (pushedAt.get(i) as number))
    } else {
      assert.equal(reply, '*-1\r\n', `waiter ${i} times out`)
    }
  }))
  latencies.sort((a, b) => a - b)
  t.diagnostic(`${chosen.length} woken; push to wake-up p50 ${latencies[Math.floor(latencies.length / 2)].toFixed(1)} ms, p99 ${latencies[Math.floor(latencies.length * 0.99)].toFixed(1)} ms; pool ${POOL}, ${N} waiters`)
  for (const i of chosen) assert.equal(await on(upstream.port, 'LLEN', `sem:${i}`), ':0\r\n', 'each token taken once')
  await waitFor(() => proxy.parking?.stats.parked === 0, 'nobody parked')
  const scraped = await proxy.metrics.registry.metrics()
  assert.match(scraped, new RegExp(`\nrespool_parked_wake_seconds_count ${chosen.length}\n`), 'one wake-up latency per woken waiter')
  assert.doesNotMatch(scraped, /\nrespool_parked_commands\{/, 'no parked commands left')
})

/** Scripts for every parkable command: the data already there, pushed later, and a timeout. */
function scenarios (resp: 2 | 3): Array<{ name: string, steps: Step[] }> {
  const hello: Step[] = resp === 3 ? [step(1, ['HELLO', '3'])] : []
  const k = (s: string): string => `park:${resp}:${s}`
  const pushLater = (...args: string[]): Step => ({ send: Buffer.alloc(0), frames: 0, before: async (port) => { await new Promise((resolve) => setTimeout(resolve, 100)); await on(port, ...args) } })
  return [
    { name: 'BLPOP ready', steps: [...hello, step(2, ['RPUSH', k('a'), 'x', 'y'], ['BLPOP', k('none'), k('a'), '1'])] },
    { name: 'BRPOP later', steps: [...hello, step(0, ['BRPOP', k('b'), '5']), pushLater('RPUSH', k('b'), '1', '2'), step(1), step(1, ['LRANGE', k('b'), '0', '-1'])] },
    { name: 'BLMPOP later', steps: [...hello, step(0, ['BLMPOP', '5', '2', k('c1'), k('c2'), 'LEFT', 'COUNT', '2']), pushLater('RPUSH', k('c2'), 'p', 'q', 'r'), step(1), step(1, ['LRANGE', k('c2'), '0', '-1'])] },
    { name: 'BZPOPMIN later', steps: [...hello, step(0, ['BZPOPMIN', k('z'), '5']), pushLater('ZADD', k('z'), '2.5', 'm', '1', 'n'), step(1), step(1, ['ZRANGE', k('z'), '0', '-1', 'WITHSCORES'])] },
    { name: 'BZPOPMAX ready', steps: [...hello, step(2, ['ZADD', k('zm'), '1', 'a', '3', 'b'], ['BZPOPMAX', k('zm'), '1'])] },
    { name: 'BZMPOP later', steps: [...hello, step(0, ['BZMPOP', '5', '1', k('zz'), 'MAX', 'COUNT', '2']), pushLater('ZADD', k('zz'), '1', 'a', '2', 'b', '3', 'c'), step(1), step(1, ['ZRANGE', k('zz'), '0', '-1'])] },
    { name: 'BRPOPLPUSH later', steps: [...hello, step(0, ['BRPOPLPUSH', k('src'), k('dst'), '5']), pushLater('RPUSH', k('src'), 'one', 'two'), step(1), step(2, ['LRANGE', k('src'), '0', '-1'], ['LRANGE', k('dst'), '0', '-1'])] },
    { name: 'BLMOVE later', steps: [...hello, step(0, ['BLMOVE', k('s2'), k('d2'), 'LEFT', 'RIGHT', '5']), pushLater('RPUSH', k('s2'), 'one', 'two'), step(1), step(2, ['LRANGE', k('s2'), '0', '-1'], ['LRANGE', k('d2'), '0', '-1'])] },
    { name: 'timeouts', steps: [...hello, step(3, ['BLPOP', k('t'), '0.1'], ['BLMOVE', k('t'), k('t2'), 'LEFT', 'LEFT', '0.1'], ['BZPOPMIN', k('t'), '0.1'])] },
    { name: 'errors', steps: [...hello, step(4, ['SET', k('str'), 'x'], ['BLPOP', k('str'), '1'], ['BLPOP', k('x'), '-1'], ['BLPOP', k('x'), 'soon'])] },
    { name: 'XREAD $ later', steps: [...hello, step(1, ['XADD', k('s1'), '1-1', 'a', 'b']), step(0, ['XREAD', 'BLOCK', '5000', 'STREAMS', k('s1'), '$']), pushLater('XADD', k('s1'), '5-1', 'f', 'v'), step(1)] },
    { name: 'XREAD id ready', steps: [...hello, step(2, ['XADD', k('s2'), '1-1', 'a', 'b'], ['XREAD', 'COUNT', '5', 'BLOCK', '1000', 'STREAMS', k('s2'), '0'])] },
    { name: 'XREAD two streams, data later on the second', steps: [...hello, step(0, ['XREAD', 'BLOCK', '5000', 'STREAMS', k('sa'), k('sb'), '$', '0-0']), pushLater('XADD', k('sb'), '3-1', 'x', 'y'), step(1)] },
    { name: 'XREAD $ of a stream whose last entry was deleted', steps: [...hello, step(3, ['XADD', k('sd'), '1-1', 'a', 'b'], ['XADD', k('sd'), '2-1', 'a', 'b'], ['XDEL', k('sd'), '2-1']), step(0, ['XREAD', 'BLOCK', '5000', 'STREAMS', k('sd'), '$']), pushLater('XADD', k('sd'), '4-1', 'c', 'd'), step(1)] },
    { name: 'XREADGROUP > later, then the pending list', steps: [...hello, step(1, ['XGROUP', 'CREATE', k('sg'), 'g', '$', 'MKSTREAM']), step(0, ['XREADGROUP', 'GROUP', 'g', 'c1', 'BLOCK', '5000', 'STREAMS', k('sg'), '>']), pushLater('XADD', k('sg'), '7-1', 'f', 'v'), step(1), step(1, ['XPENDING', k('sg'), 'g'])] },
    { name: 'XREADGROUP NOACK leaves nothing pending', steps: [...hello, step(1, ['XGROUP', 'CREATE', k('sn'), 'g', '$', 'MKSTREAM']), step(0, ['XREADGROUP', 'GROUP', 'g', 'c1', 'COUNT', '1', 'NOACK', 'BLOCK', '5000', 'STREAMS', k('sn'), '>']), pushLater('XADD', k('sn'), '8-1', 'f', 'v'), step(1), step(1, ['XPENDING', k('sn'), 'g'])] },
    { name: 'stream timeouts and errors', steps: [...hello, step(4, ['XREAD', 'BLOCK', '100', 'STREAMS', k('st'), '$'], ['XREADGROUP', 'GROUP', 'nog', 'c', 'BLOCK', '100', 'STREAMS', k('st'), '>'], ['SET', k('sx'), '1'], ['XREAD', 'BLOCK', '100', 'STREAMS', k('sx'), '$'])] },
    { name: 'a key that turns into a string keeps its waiter blocked until it is a list again', steps: [...hello, step(0, ['BLPOP', k('wt'), '5']), pushLater('SET', k('wt'), 'x'), pushLater('DEL', k('wt')), pushLater('RPUSH', k('wt'), 'v'), step(1), step(1, ['EXISTS', k('wt')])] },
    { name: 'later commands wait for the blocking one', steps: [...hello, step(0, ['BLPOP', k('o'), '5'], ['GET', k('after')], ['SET', k('after'), '1']), pushLater('RPUSH', k('o'), 'v'), step(3)] }
  ]
}

for (const resp of [2, 3] as const) {
  test(`RESP${resp}: every parkable command answers exactly as Redis does, and leaves the same data behind`, { timeout: 60000 }, async () => {
    const mask = (frames: string[]): string[] => frames.map((f) => f.replace(/(\$2\r\nid\r\n:)\d+/, '$1<id>'))
    for (const { name, steps } of scenarios(resp)) {
      const want = mask(await runScript(direct.port, steps))
      const got = mask(await runScript(proxy.address.port, steps))
      assert.deepEqual(got, want, `${name}: direct ${showFrames(want)}, through respool ${showFrames(got)}`)
    }
  })
}

test('60 stream consumers over a pool of 8: each new entry reaches exactly one XREADGROUP consumer, and XREAD $ waiters all see it', { timeout: 60000 }, async () => {
  const GROUP_WAITERS = 40
  const READ_WAITERS = 20
  await on(upstream.port, 'XGROUP', 'CREATE', 'park:jobs', 'workers', '$', 'MKSTREAM')
  const consumers = await Promise.all(Array.from({ length: GROUP_WAITERS }, async () => await RawClient.connect(proxy.address.port)))
  const readers = await Promise.all(Array.from({ length: READ_WAITERS }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of [...consumers, ...readers]) c.close() })
  const consumerFrames = consumers.map((c) => new FrameReader(c))
  const readerFrames = readers.map((c) => new FrameReader(c))
  consumers.forEach((c, i) => { c.write(cmd('XREADGROUP', 'GROUP', 'workers', `c${i}`, 'COUNT', '1', 'BLOCK', '10000', 'STREAMS', 'park:jobs', '>')) })
  readers.forEach((c) => { c.write(cmd('XREAD', 'BLOCK', '10000', 'STREAMS', 'park:jobs', '$')) })
  await parked(GROUP_WAITERS + READ_WAITERS)
  // One entry per consumer, added straight to Redis in one burst.
  const pusher = await RawClient.connect(upstream.port)
  after(() => { pusher.close() })
  for (let i = 1; i <= GROUP_WAITERS; i++) pusher.write(cmd('XADD', 'park:jobs', `${i}-0`, 'n', String(i)))
  const got = await Promise.all(consumerFrames.map(async (f) => await f.next(10000)))
  const ids = got.map((reply) => /\$\d+\r\n(\d+-0)\r\n/.exec(reply)?.[1] ?? reply).sort()
  assert.deepEqual(ids, Array.from({ length: GROUP_WAITERS }, (_, i) => `${i + 1}-0`).sort(), 'each entry delivered to exactly one consumer')
  for (const f of readerFrames) {
    // A $ reader gets the entries after the stream's end when it arrived: the first of the burst at least.
    assert.match(await f.next(10000), /^\*1\r\n\*2\r\n\$9\r\npark:jobs\r\n\*\d+\r\n\*2\r\n\$3\r\n1-0\r\n/)
  }
  assert.match(await on(upstream.port, 'XPENDING', 'park:jobs', 'workers'), new RegExp(`^\\*4\r\n:${GROUP_WAITERS}\r\n`), 'every delivered entry pending once')
  await waitFor(() => proxy.parking?.stats.parked === 0, 'nobody parked')
})

test('waiters on one key are served longest-waiting first; a multi-key waiter takes from its first key with data', { timeout: 30000 }, async () => {
  const clients = await Promise.all([0, 1, 2].map(async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  for (const [i, c] of clients.entries()) {
    c.write(cmd('BLPOP', 'fifo:q', '5'))
    await parked(i + 1)
  }
  const frames = clients.map((c) => new FrameReader(c))
  for (const [i, f] of frames.entries()) {
    await on(upstream.port, 'RPUSH', 'fifo:q', `e${i}`)
    assert.equal(await f.next(5000), `*2\r\n$6\r\nfifo:q\r\n$2\r\ne${i}\r\n`)
  }
  await on(upstream.port, 'RPUSH', 'fifo:c', 'from-c')
  await on(upstream.port, 'RPUSH', 'fifo:b', 'from-b')
  assert.equal(await on(proxy.address.port, 'BLPOP', 'fifo:a', 'fifo:b', 'fifo:c', '1'), '*2\r\n$6\r\nfifo:b\r\n$6\r\nfrom-b\r\n')
})

test('a waiter in database 3 waits on database 3\'s key', { timeout: 30000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const frames = new FrameReader(c)
  c.write(cmd('SELECT', '3'))
  assert.equal(await frames.next(), '+OK\r\n')
  c.write(cmd('BLPOP', 'db:q', '5'))
  await parked(1)
  await on(upstream.port, 'RPUSH', 'db:q', 'db0') // database 0: not for this waiter
  const admin = await RawClient.connect(upstream.port)
  after(() => { admin.close() })
  const adminFrames = new FrameReader(admin)
  admin.write(Buffer.concat([cmd('SELECT', '3'), cmd('RPUSH', 'db:q', 'db3')]))
  await adminFrames.take(2)
  assert.equal(await frames.next(5000), '*2\r\n$4\r\ndb:q\r\n$3\r\ndb3\r\n')
  assert.equal(await on(upstream.port, 'LRANGE', 'db:q', '0', '-1'), '*1\r\n$3\r\ndb0\r\n')
})

test('a client that leaves while parked takes nothing: a later push stays in Redis', { timeout: 30000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  c.write(cmd('BLPOP', 'gone:q', '0'))
  await parked(1)
  c.close()
  await parked(0)
  await on(upstream.port, 'RPUSH', 'gone:q', 'precious')
  // Another parked waiter on another key proves the watcher has moved on.
  const d = await RawClient.connect(proxy.address.port)
  after(() => { d.close() })
  d.write(cmd('BLPOP', 'gone:other', '5'))
  await parked(1)
  await on(upstream.port, 'RPUSH', 'gone:other', 'x')
  assert.equal(await new FrameReader(d).next(5000), '*2\r\n$10\r\ngone:other\r\n$1\r\nx\r\n')
  assert.equal(await on(upstream.port, 'LRANGE', 'gone:q', '0', '-1'), '*1\r\n$8\r\nprecious\r\n')
})

test('chaos: waiters that come, time out and leave at random never lose or duplicate an element', { timeout: 60000 }, async (t) => {
  const seed = Number(process.env.RESPOOL_PARK_SEED ?? 0xc4a05)
  t.diagnostic(`seed ${seed} (RESPOOL_PARK_SEED)`)
  const rnd = prng(seed)
  const KEYS = ['chaos:a', 'chaos:b', 'chaos:c']
  const delivered: string[] = []
  const pushed: string[] = []
  let stop = false
  const worker = async (w: number): Promise<void> => {
    while (!stop) {
      const c = await RawClient.connect(proxy.address.port)
      const frames = new FrameReader(c)
      const key = KEYS[Math.floor(rnd() * KEYS.length)]
      const kind = rnd()
      if (kind < 0.6) c.write(cmd('BLPOP', key, '0.2'))
      else if (kind < 0.8) c.write(cmd('BRPOP', key, KEYS[0], '0.2'))
      else c.write(cmd('BLMOVE', key, `chaos:dst:${w}`, 'LEFT', 'RIGHT', '0.2'))
      if (rnd() < 0.3) {
        await new Promise((resolve) => setTimeout(resolve, rnd() * 50))
        // Leaves while parked (or while being served): it closes its side and reads what had
        // been sent to it before; an element in there was delivered.
        c.socket.end()
        const rest = await c.readUntilClose(5000)
        const value = /\$\d+\r\n(v\d+)\r\n$/.exec(rest)?.[1]
        if (value !== undefined) delivered.push(value)
        continue
      }
      const reply = await frames.next(5000)
      const value = /\$\d+\r\n(v\d+)\r\n$/.exec(reply)?.[1]
      if (value !== undefined) delivered.push(value)
      c.close()
    }
  }
  const workers = Array.from({ length: 12 }, async (_, w) => { await worker(w) })
  const producer = await RawClient.connect(upstream.port)
  after(() => { producer.close() })
  const producerFrames = new FrameReader(producer)
  for (let i = 0; i < 300; i++) {
    const value = `v${i}`
    pushed.push(value)
    producer.write(cmd(rnd() < 0.5 ? 'RPUSH' : 'LPUSH', KEYS[Math.floor(rnd() * KEYS.length)], value))
    await producerFrames.next()
    if (rnd() < 0.2) await new Promise((resolve) => setTimeout(resolve, 5))
  }
  stop = true
  await Promise.all(workers)
  await waitFor(() => proxy.parking?.stats.parked === 0 && proxy.parking.stats.trying === 0 && proxy.parking.stats.putBacksInFlight === 0,
    'no waiter parked or being tried, and elements taken for clients that left are back')
  // Every element is either with exactly one client or still in Redis (a source list, or the
  // destination list of a BLMOVE whose client took it): none lost, none twice.
  const remaining: string[] = []
  const inDestinations: string[] = []
  const keys = (await on(upstream.port, 'KEYS', 'chaos:*')).split('\r\n').filter((_, i) => i > 0 && i % 2 === 0).filter((k) => k !== '')
  for (const key of keys) {
    const list = await on(upstream.port, 'LRANGE', key, '0', '-1')
    const values = list.split('\r\n').filter((_, i) => i > 0 && i % 2 === 0).filter((v) => v !== '')
    // A BLMOVE's element sits in its destination and was also delivered: count it once.
    if (key.startsWith('chaos:dst:')) {
      inDestinations.push(...values)
      continue
    }
    remaining.push(...values)
  }
  const all = [...delivered.filter((v) => !remaining.includes(v)), ...remaining].sort()
  const dupes = delivered.filter((v, i) => delivered.indexOf(v) !== i)
  assert.deepEqual(dupes, [], `seed ${seed}: delivered twice`)
  const missing = pushed.filter((v) => !all.includes(v))
  // An element moved by a BLMOVE whose client left is moved back to its source, so it is in
  // `remaining`; one whose client got it is in `delivered`.
  assert.deepEqual(missing, [], `seed ${seed}: ${missing.length} elements lost: ${missing.slice(0, 10).join(' ')} (in a BLMOVE destination: ${missing.filter((v) => inDestinations.includes(v)).join(' ')})`)
  t.diagnostic(`${pushed.length} pushed, ${delivered.length} delivered, ${remaining.length} left in Redis, ${proxy.parking?.stats.putBackTotal ?? 0} put back for clients that left`)
})
