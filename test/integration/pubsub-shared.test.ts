import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { runScript, step, showFrames, type Step } from '../helpers/script.js'
import { runScript as runProgramScript } from '../helpers/run-program.js'
import { waitFor, waitForValue } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Channel and pattern subscribers on the shared fan-out (the default): one upstream subscriber
 * connection for every client, and yet each client gets exactly the frames Redis would have sent
 * it, compared byte for byte with a direct connection to the same Redis.
 */

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 8 })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

const none = Buffer.alloc(0)

/** A step that first publishes through `port` (recording the count) and then waits for `frames`. */
function publish (counts: string[], frames: number, channel: string | Buffer, message: string): Step {
  return { send: none, frames, before: async (port) => { counts.push(await commandOn(port, 'PUBLISH', channel, message)) } }
}

async function noSubscribersLeft (): Promise<void> {
  await waitForValue('PUBSUB CHANNELS', async () => await commandOn(redis.port, 'PUBSUB', 'CHANNELS'), '*0\r\n')
  await waitForValue('PUBSUB NUMPAT', async () => await commandOn(redis.port, 'PUBSUB', 'NUMPAT'), ':0\r\n')
}

/** Runs the script directly and through respool; both must see the same frames and publish counts. */
async function sameAsDirect (steps: (counts: string[]) => Step[], skip = 0): Promise<string[]> {
  const directCounts: string[] = []
  const want = (await runScript(redis.port, steps(directCounts))).slice(skip)
  await noSubscribersLeft()
  const proxyCounts: string[] = []
  const got = (await runScript(proxy.address.port, steps(proxyCounts))).slice(skip)
  assert.equal(showFrames(got), showFrames(want))
  assert.deepEqual(proxyCounts, directCounts)
  await noSubscribersLeft()
  await waitForValue('pins', () => proxy.router.pinCount, 0)
  return got
}

test('RESP2: subscribe, overlapping pattern, publish counts, PING, refused commands, unsubscribe counts: same bytes as Redis', { timeout: 30000 }, async () => {
  const got = await sameAsDirect((counts) => [
    step(2, ['SUBSCRIBE', 'sh1:a', 'sh1:b']),
    step(2, ['PSUBSCRIBE', 'sh1:*', 'sh1:[ab]']),
    step(1, ['SUBSCRIBE', 'sh1:a']), // again: the count does not change
    publish(counts, 3, 'sh1:a', 'to a'), // message + two pmessages
    publish(counts, 1, 'sh1:zz', 'to zz'), // only the first pattern
    publish(counts, 0, 'sh1-none', 'nobody'),
    step(1, ['PING']),
    step(1, ['PING', 'hi there']),
    step(1, ['PING', 'a', 'b']),
    step(1, ['GET', 'sh1:k']),
    step(1, ['CLIENT', 'ID']),
    step(1, ['MULTI']),
    step(1, ['GET']),
    step(1, ['NOSUCHCOMMAND', 'x']),
    step(2, ['UNSUBSCRIBE', 'sh1:a', 'sh1:nope']),
    publish(counts, 2, 'sh1:a', 'patterns only'),
    step(1, ['PUNSUBSCRIBE', 'sh1:*']),
    step(1, ['PUNSUBSCRIBE']),
    step(1, ['UNSUBSCRIBE']),
    step(1, ['UNSUBSCRIBE']),
    step(1, ['GET', 'sh1:k'])
  ])
  assert.ok(got.some((f) => f.startsWith('*4\r\n$8\r\npmessage')))
})

test('RESP3: pushes, subscriber count per client, binary channel names, ordinary commands while subscribed: same bytes as Redis', { timeout: 30000 }, async () => {
  await sameAsDirect((counts) => [
    step(1, ['HELLO', '3']), // differs (ids, version): skipped
    step(2, ['SUBSCRIBE', 'sh2:a', Buffer.from([0, 13, 10, 255])]),
    step(1, ['PSUBSCRIBE', 'sh2:*']),
    publish(counts, 2, 'sh2:a', 'x\r\ny'),
    publish(counts, 1, Buffer.from([0, 13, 10, 255]), 'binary channel'),
    step(1, ['PING']),
    step(1, ['ECHO', 'e']),
    step(1, ['PUBSUB', 'NUMSUB', 'sh2:a', 'sh2:none']),
    step(1, ['UNSUBSCRIBE', 'sh2:a']),
    publish(counts, 1, 'sh2:b', 'pattern only'),
    step(1, ['PING']),
    step(1, ['RESET']),
    step(1, ['GET', 'sh2:k'])
  ], 1)
})

test('RESET and QUIT while subscribed: same bytes as Redis; the shared connection unsubscribes and goes back', { timeout: 20000 }, async () => {
  await sameAsDirect(() => [
    step(2, ['SUBSCRIBE', 'sh3:a', 'sh3:b']),
    step(1, ['RESET']),
    step(1, ['PING']),
    step(1, ['PUNSUBSCRIBE'])
  ])
  for (const port of [redis.port, proxy.address.port]) {
    const c = await RawClient.connect(port)
    const frames = new FrameReader(c)
    c.write(Buffer.concat([cmd('SUBSCRIBE', 'sh3:q'), cmd('QUIT')]))
    assert.deepEqual(await frames.take(2), ['*3\r\n$9\r\nsubscribe\r\n$5\r\nsh3:q\r\n:1\r\n', '+OK\r\n'])
    c.close()
    await noSubscribersLeft()
  }
})

test('PUBLISH and PUBSUB NUMSUB count each respool subscriber; a direct client sees the shared connection as one', { timeout: 20000 }, async () => {
  const opened: RawClient[] = []
  try {
    for (let i = 0; i < 3; i++) {
      const c = await RawClient.connect(proxy.address.port)
      opened.push(c)
      c.write(cmd('SUBSCRIBE', 'sh4:c'))
      await new FrameReader(c).next()
    }
    const p = await RawClient.connect(proxy.address.port)
    opened.push(p)
    p.write(cmd('PSUBSCRIBE', 'sh4:*'))
    await new FrameReader(p).next()
    const d = await RawClient.connect(redis.port)
    opened.push(d)
    d.write(cmd('SUBSCRIBE', 'sh4:c'))
    await new FrameReader(d).next()
    assert.equal(await commandOn(proxy.address.port, 'PUBLISH', 'sh4:c', 'm'), ':5\r\n') // 3 + 1 direct + 1 pattern
    assert.equal(await commandOn(proxy.address.port, 'PUBSUB', 'NUMSUB', 'sh4:c', 'sh4:x'), '*4\r\n$5\r\nsh4:c\r\n:4\r\n$5\r\nsh4:x\r\n:0\r\n')
    assert.equal(await commandOn(proxy.address.port, 'PUBSUB', 'NUMPAT'), ':1\r\n')
    // Directly, respool's subscribers are one client (its connection) per channel and pattern.
    assert.equal(await commandOn(redis.port, 'PUBLISH', 'sh4:c', 'm'), ':3\r\n')
    assert.equal(await commandOn(redis.port, 'PUBSUB', 'NUMSUB', 'sh4:c'), '*2\r\n$5\r\nsh4:c\r\n:2\r\n')
  } finally {
    for (const c of opened) c.close()
  }
  await noSubscribersLeft()
})

test('1000 raw subscribers over --pool-size 4 with Redis at --maxclients 5: every one gets every message once, in order', { timeout: 60000 }, async () => {
  const bounded = await startBoundedRedis(5)
  const small = await startProxy({ upstream: bounded.redis.url, poolSize: 4 })
  const N = 1000
  const M = 20
  const clients: RawClient[] = []
  try {
    const readers: FrameReader[] = []
    for (let i = 0; i < N; i++) {
      const c = await RawClient.connect(small.address.port)
      clients.push(c)
      readers.push(new FrameReader(c))
      // Half also take a pattern that matches; every tenth speaks RESP3.
      const hello = i % 10 === 0 ? [cmd('HELLO', '3')] : []
      c.write(Buffer.concat([...hello, cmd('SUBSCRIBE', 'fan:all', `fan:${i % 7}`), ...(i % 2 === 0 ? [cmd('PSUBSCRIBE', 'fan:a*')] : [])]))
    }
    for (let i = 0; i < N; i++) {
      const frames = await readers[i].take((i % 10 === 0 ? 1 : 0) + 2 + (i % 2 === 0 ? 1 : 0), 20000)
      const head = i % 10 === 0 ? '>' : '*'
      assert.equal(frames.at(-1), i % 2 === 0 ? `${head}3\r\n$10\r\npsubscribe\r\n$6\r\nfan:a*\r\n:3\r\n` : `${head}3\r\n$9\r\nsubscribe\r\n$5\r\nfan:${i % 7}\r\n:2\r\n`)
    }
    const pub = await RawClient.connect(small.address.port)
    clients.push(pub)
    const pubFrames = new FrameReader(pub)
    pub.write(Buffer.concat(Array.from({ length: M }, (_, j) => cmd('PUBLISH', 'fan:all', `m${j}`))))
    const counts = await pubFrames.take(M, 20000)
    assert.deepEqual(new Set(counts), new Set([`:${N + N / 2}\r\n`]))
    for (let i = 0; i < N; i++) {
      const frames = await readers[i].take(M * (i % 2 === 0 ? 2 : 1), 20000)
      const head = i % 10 === 0 ? '>' : '*'
      const want = Array.from({ length: M }, (_, j) => {
        const msg = `$${`m${j}`.length}\r\nm${j}\r\n`
        const plain = `${head}3\r\n$7\r\nmessage\r\n$7\r\nfan:all\r\n${msg}`
        return i % 2 === 0 ? [plain, `${head}4\r\n$8\r\npmessage\r\n$6\r\nfan:a*\r\n$7\r\nfan:all\r\n${msg}`] : [plain]
      }).flat()
      assert.deepEqual(frames, want, `subscriber ${i}`)
    }
    pub.write(cmd('PUBLISH', 'fan:3', 'x'))
    assert.equal(await pubFrames.next(), `:${Math.floor((N - 1 - 3) / 7) + 1}\r\n`)
    assert.ok(await bounded.upstreamConnections() <= 4)
    await bounded.assertNoneRejected()
    // Everybody leaves: the shared connection unsubscribes everything and goes back.
    for (const c of clients) c.close()
    await waitForValue('PUBSUB CHANNELS', async () => JSON.stringify(await bounded.admin.pubsub('CHANNELS')), '[]', 10000)
    await waitForValue('pins', () => small.router.pinCount, 0, 10000)
  } finally {
    for (const c of clients) c.close()
    await small.destroy()
    await bounded.stop()
  }
})

test('the shared connection killed in Redis: the union is subscribed again at once and clients stay subscribed', { timeout: 30000 }, async () => {
  const opened: RawClient[] = []
  try {
    const a = await RawClient.connect(proxy.address.port)
    const b = await RawClient.connect(proxy.address.port)
    opened.push(a, b)
    const fa = new FrameReader(a)
    const fb = new FrameReader(b)
    a.write(cmd('SUBSCRIBE', 'sh6:x', 'sh6:y'))
    b.write(cmd('PSUBSCRIBE', 'sh6:*'))
    await fa.take(2)
    await fb.take(1)
    const list = await commandOn(redis.port, 'CLIENT', 'LIST')
    const line = list.split('\n').find((l) => / name=respool /.test(l) && / flags=P /.test(l))
    assert.ok(line !== undefined, list)
    const id = /id=(\d+)/.exec(line)?.[1] as string
    assert.equal(await commandOn(redis.port, 'CLIENT', 'KILL', 'ID', id), ':1\r\n')
    await waitFor(() => proxy.pubsub?.stats.reconnects === 1, 'the hub reconnected')
    await waitForValue('NUMSUB after reconnect', async () => await commandOn(redis.port, 'PUBSUB', 'NUMSUB', 'sh6:x', 'sh6:y'), '*4\r\n$5\r\nsh6:x\r\n:1\r\n$5\r\nsh6:y\r\n:1\r\n')
    await waitForValue('NUMPAT after reconnect', async () => await commandOn(redis.port, 'PUBSUB', 'NUMPAT'), ':1\r\n')
    assert.equal(await commandOn(proxy.address.port, 'PUBLISH', 'sh6:y', 'after'), ':2\r\n')
    assert.equal(await fa.next(), '*3\r\n$7\r\nmessage\r\n$5\r\nsh6:y\r\n$5\r\nafter\r\n')
    assert.equal(await fb.next(), '*4\r\n$8\r\npmessage\r\n$5\r\nsh6:*\r\n$5\r\nsh6:y\r\n$5\r\nafter\r\n')
    // The metrics say the same.
    const metrics = await proxy.metrics.registry.metrics()
    assert.match(metrics, /\nrespool_pubsub_subscribers 2\n/)
    assert.match(metrics, /\nrespool_pubsub_upstream_subscriptions\{kind="channel"\} 2\n/)
    assert.match(metrics, /\nrespool_pubsub_upstream_subscriptions\{kind="pattern"\} 1\n/)
    assert.match(metrics, /\nrespool_pubsub_reconnects_total 1\n/)
    // Still in subscriber mode with their own counts.
    a.write(cmd('UNSUBSCRIBE', 'sh6:x'))
    assert.equal(await fa.next(), '*3\r\n$11\r\nunsubscribe\r\n$5\r\nsh6:x\r\n:1\r\n')
    assert.deepEqual(await fa.available(), [])
    assert.deepEqual(await fb.available(), [])
  } finally {
    for (const c of opened) c.close()
  }
  await noSubscribersLeft()
})

test('a burst of subscribes and unsubscribes from 50 clients leaves Redis subscribed to exactly their union', { timeout: 30000 }, async () => {
  const opened: RawClient[] = []
  const want = new Set<string>()
  try {
    const readers: Array<{ reader: FrameReader, frames: number }> = []
    for (let i = 0; i < 50; i++) {
      const c = await RawClient.connect(proxy.address.port)
      opened.push(c)
      const mine = new Set<string>()
      const parts: Buffer[] = []
      let frames = 0
      for (let j = 0; j < 20; j++) {
        const ch = `sh7:${(i * 7 + j * 3) % 11}`
        if ((i + j) % 3 === 0 && mine.has(ch)) {
          parts.push(cmd('UNSUBSCRIBE', ch))
          mine.delete(ch)
        } else {
          parts.push(cmd('SUBSCRIBE', ch))
          mine.add(ch)
        }
        frames++
      }
      c.write(Buffer.concat(parts))
      readers.push({ reader: new FrameReader(c), frames })
      for (const ch of mine) want.add(ch)
    }
    for (const { reader, frames } of readers) await reader.take(frames, 10000)
    await waitFor(async () => {
      const reply = await commandOn(redis.port, 'PUBSUB', 'CHANNELS', 'sh7:*')
      const got = new Set(reply.split('\r\n').filter((l) => l.startsWith('sh7:')))
      return got.size === want.size && [...want].every((c) => got.has(c))
    }, 'Redis subscribed to the union')
  } finally {
    for (const c of opened) c.close()
  }
  await noSubscribersLeft()
  await waitForValue('pins', () => proxy.router.pinCount, 0)
})

test('one subscriber that never reads is cut off at its pub/sub output limit; the others get every message', { timeout: 60000 }, async () => {
  const small = await startProxy({ upstream: redis.url, poolSize: 4, outputLimits: 'pubsub 4mb 0 0' })
  const opened: RawClient[] = []
  const slow = net.connect({ port: small.address.port, host: '127.0.0.1' })
  slow.on('error', () => {})
  try {
    await new Promise<void>((resolve) => slow.once('connect', () => { resolve() }))
    slow.write(cmd('SUBSCRIBE', 'sh8:c'))
    const fast = await RawClient.connect(small.address.port)
    opened.push(fast)
    const frames = new FrameReader(fast)
    fast.write(cmd('SUBSCRIBE', 'sh8:c'))
    await frames.next()
    await waitFor(() => small.pubsub?.stats.subscribers === 2, 'both subscribed')
    slow.pause()
    const pub = await RawClient.connect(small.address.port)
    opened.push(pub)
    const N = 2000
    const payload = 'x'.repeat(10000)
    const pubFrames = new FrameReader(pub)
    // In bursts of 1 MB: the reading subscriber never has more than that waiting.
    let got = 0
    for (let i = 0; i < N; i += 100) {
      pub.write(Buffer.concat(Array.from({ length: 100 }, () => cmd('PUBLISH', 'sh8:c', payload))))
      await pubFrames.take(100, 10000)
      got += (await frames.take(100, 10000)).length
    }
    assert.equal(got, N)
    await waitFor(() => small.stats.downstreamCxOutputLimit === 1, 'the slow subscriber was disconnected')
    assert.equal(small.pubsub?.stats.subscribers, 1)
  } finally {
    slow.destroy()
    for (const c of opened) c.close()
    await small.destroy()
  }
  await noSubscribersLeft()
})

test('ioredis in subscriber mode: subscribe, psubscribe, messages, unsubscribe, back to commands', { timeout: 30000 }, async () => {
  const { Redis } = await import('ioredis')
  {
    const sub = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, lazyConnect: true })
    const pub = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, lazyConnect: true })
    try {
      await sub.connect()
      await pub.connect()
      const seen: string[] = []
      sub.on('message', (channel: string, msg: string) => { seen.push(`m ${channel} ${msg}`) })
      sub.on('pmessage', (pattern: string, channel: string, msg: string) => { seen.push(`p ${pattern} ${channel} ${msg}`) })
      assert.equal(await sub.subscribe('io:a', 'io:b'), 2)
      assert.equal(await sub.psubscribe('io:*'), 3)
      assert.equal(await pub.publish('io:a', 'one'), 2)
      assert.equal(await pub.publish('io:c', 'two'), 1)
      await waitFor(() => seen.length === 3, 'three messages')
      assert.deepEqual(seen, ['m io:a one', 'p io:* io:a one', 'p io:* io:c two'])
      // By name: ioredis 6 waits forever on an argument-less unsubscribe, directly as well.
      await sub.unsubscribe('io:a', 'io:b')
      await sub.punsubscribe('io:*')
      assert.equal(await sub.set('io:k', 'v'), 'OK')
      assert.equal(await sub.get('io:k'), 'v')
    } finally {
      sub.disconnect()
      pub.disconnect()
    }
  }
  await noSubscribersLeft()
})

test('redis-py PubSub: subscribe, psubscribe, get_message, unsubscribe; counts as seen by PUBLISH', { timeout: 30000 }, async () => {
  const lines = await runProgramScript('/usr/bin/python3', ['-', String(proxy.address.port)], `
import sys, redis, time
port = int(sys.argv[1])
r = redis.Redis(port=port)
p = r.pubsub()
p.subscribe('py:a')
p.psubscribe('py:*')
def next_message():
    deadline = time.time() + 5
    while time.time() < deadline:
        m = p.get_message(timeout=1)
        if m is not None:
            return m
    raise Exception('no message')
print('confirm', next_message()['data'], next_message()['data'])
print('published', r.publish('py:a', 'hello'))
m1 = next_message(); m2 = next_message()
print(m1['type'], m1['channel'].decode(), m1['data'].decode())
print(m2['type'], m2['pattern'].decode(), m2['channel'].decode(), m2['data'].decode())
p.unsubscribe('py:a')
print('unsub', next_message()['data'])
print('numsub', r.pubsub_numsub('py:a'))
p.close()
`)
  assert.deepEqual(lines, [
    'confirm 1 2',
    'published 2',
    'message py:a hello',
    'pmessage py:* py:a hello',
    'unsub 1',
    "numsub [(b'py:a', 0)]"
  ])
  await noSubscribersLeft()
})

test('clients holding a pin (WATCH) subscribe on their pin: with every pin held that way, SUBSCRIBE still answers as Redis does', { timeout: 30000 }, async () => {
  // Pool 4: 3 pins, all taken by clients in WATCH. Were their SUBSCRIBEs to wait for the shared
  // connection, which needs a pin of its own, nobody would ever be answered.
  const small = await startProxy({ upstream: redis.url, poolSize: 4 })
  after(async () => { await small.destroy() })
  const script = (i: number): Step[] => [
    step(1, ['WATCH', `sh9:k${i}`]),
    step(1, ['SUBSCRIBE', `sh9:c${i}`]),
    { send: none, frames: 1, before: async (port) => { await commandOn(port, 'PUBLISH', `sh9:c${i}`, 'hello') } },
    step(2, ['UNSUBSCRIBE', `sh9:c${i}`], ['PING'])
  ]
  const want = await runScript(redis.port, script(0))
  const got = await Promise.all([0, 1, 2].map(async (i) => await runScript(small.address.port, script(i))))
  got.forEach((frames, i) => {
    const expected = want.map((f) => f.replaceAll('sh9:c0', `sh9:c${i}`))
    assert.deepEqual(frames, expected, `client ${i}: direct ${showFrames(expected)}, through respool ${showFrames(frames)}`)
  })
})

test('a PUBLISH sent after the last subscriber\'s UNSUBSCRIBE was answered counts what Redis would, even when Redis runs both in one turn', { timeout: 30000 }, async () => {
  // Redis, busy with a script, takes respool's UNSUBSCRIBE (shared connection) and a PUBLISH
  // (a lane) in the same turn and answers the PUBLISH first: a reply for the client that came
  // before Redis confirmed would let respool count its subscription that Redis had just dropped.
  const spin = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]; while true do local n = redis.call('TIME'); if n[1] * 1000000 + n[2] - start > 60000 then break end end"
  const patterned = await RawClient.connect(proxy.address.port)
  const subscriber = await RawClient.connect(proxy.address.port)
  const publisher = await RawClient.connect(proxy.address.port)
  const direct = await RawClient.connect(redis.port)
  after(() => { for (const c of [patterned, subscriber, publisher, direct]) c.close() })
  const [pf, sf, uf, df] = [patterned, subscriber, publisher, direct].map((c) => new FrameReader(c))
  patterned.write(cmd('PSUBSCRIBE', 'sh10:*'))
  assert.equal(await pf.next(5000), '*3\r\n$10\r\npsubscribe\r\n$6\r\nsh10:*\r\n:1\r\n')
  for (let round = 0; round < 5; round++) {
    subscriber.write(cmd('SUBSCRIBE', 'sh10:a'))
    assert.equal(await sf.next(5000), '*3\r\n$9\r\nsubscribe\r\n$6\r\nsh10:a\r\n:1\r\n')
    direct.write(cmd('EVAL', spin, '0'))
    // Let Redis start spinning (the script must be read before the UNSUBSCRIBE).
    await new Promise((resolve) => setTimeout(resolve, 10))
    subscriber.write(cmd('UNSUBSCRIBE', 'sh10:a'))
    assert.equal(await sf.next(5000), '*3\r\n$11\r\nunsubscribe\r\n$6\r\nsh10:a\r\n:0\r\n')
    publisher.write(cmd('PUBLISH', 'sh10:a', 'x'))
    assert.equal(await uf.next(5000), ':1\r\n', `round ${round}: the pattern's subscriber only`)
    assert.equal(await df.next(5000), '$-1\r\n')
    assert.equal(await pf.next(5000), '*4\r\n$8\r\npmessage\r\n$6\r\nsh10:*\r\n$6\r\nsh10:a\r\n$1\r\nx\r\n')
  }
})
