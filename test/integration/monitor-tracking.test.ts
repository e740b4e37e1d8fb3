import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, splitFrames, connectFramed, commandOn, type FramedClient } from '../helpers/resp-frames.js'
import { waitForValue } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Streams to one client: MONITOR and RESP3 CLIENT TRACKING through respool, compared with a
 * direct connection to the same Redis wherever the bytes are deterministic.
 */

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 6 })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

/** A MONITOR line: `+<unix time>.<micros> [<db> <addr>] "arg" …`. */
const MONITOR_LINE = /^\+\d+\.\d{6} \[\d+ [^\]]+\]( "(?:[^"\\]|\\.)*")+\r\n$/
const isMonitorLine = (frame: string): boolean => MONITOR_LINE.test(frame)

/**
 * Reads until `n` frames that are not MONITOR lines have arrived; returns those and the
 * monitor lines seen on the way. A missing frame is recorded in place rather than thrown, so a
 * comparison with Redis shows it.
 */
async function repliesAmongMonitorLines (reader: FrameReader, n: number, timeoutMs = 3000): Promise<{ replies: string[], lines: string[] }> {
  const replies: string[] = []
  const lines: string[] = []
  const deadline = Date.now() + timeoutMs
  while (replies.length < n) {
    let frame: string
    try {
      frame = await reader.next(Math.max(1, deadline - Date.now()))
    } catch (err) {
      replies.push(`«${(err as Error).message}»`)
      break
    }
    if (isMonitorLine(frame)) lines.push(frame)
    else replies.push(frame)
  }
  return { replies, lines }
}


async function pinsReleased (): Promise<void> {
  await waitForValue('proxy.router.pinCount', () => proxy.router.pinCount, 0)
}

/** respool's upstream connections (CLIENT LIST lines) whose flags contain `flag`. */
async function upstreamWithFlag (flag: string): Promise<string[]> {
  const list = await commandOn(redis.port, 'CLIENT', 'LIST')
  return list.split('\n').filter((line) => / name=respool /.test(line) && (/ flags=(\S+) /.exec(line)?.[1] ?? '').includes(flag))
}

type Scenario = (port: number, proxied: boolean, opened: RawClient[]) => Promise<string[]>

/** Runs the scenario directly against Redis, then through respool; the results must be identical. */
async function sameAsDirect (scenario: Scenario): Promise<string[]> {
  const run = async (port: number, proxied: boolean): Promise<string[]> => {
    const opened: RawClient[] = []
    try {
      return await scenario(port, proxied, opened)
    } finally {
      for (const c of opened) c.close()
    }
  }
  const want = await run(redis.port, false)
  const got = await run(proxy.address.port, true)
  assert.deepEqual(got, want)
  return got
}

// ---- 7. MONITOR --------------------------------------------------------------------------------

test('MONITOR through the proxy: +OK, then a line for each command other clients send through respool', { timeout: 20000 }, async () => {
  const opened: RawClient[] = []
  try {
    const unique = `mon:${process.pid}:${Date.now()}`
    // What a direct monitor line looks like, as a reference for the format.
    const direct = await connectFramed(redis.port, opened)
    direct.client.write(cmd('MONITOR'))
    assert.equal(await direct.frames.next(), '+OK\r\n')
    const directWriter = await connectFramed(redis.port, opened)
    directWriter.client.write(cmd('SET', `${unique}:direct`, 'dv'))
    assert.equal(await directWriter.frames.next(), '+OK\r\n')
    let directLine = ''
    while (directLine === '') {
      const frame = await direct.frames.next()
      assert.match(frame, MONITOR_LINE)
      if (frame.includes(`"${unique}:direct"`)) directLine = frame
    }
    assert.match(directLine, new RegExp(`^\\+\\d+\\.\\d{6} \\[0 127\\.0\\.0\\.1:\\d+\\] "SET" "${unique}:direct" "dv"\\r\\n$`))
    direct.client.close()

    const m = await connectFramed(proxy.address.port, opened)
    m.client.write(cmd('MONITOR'))
    assert.equal(await m.frames.next(), '+OK\r\n')
    assert.equal(proxy.router.pinCount, 1)

    const writer = await connectFramed(proxy.address.port, opened)
    writer.client.write(Buffer.concat([cmd('SET', `${unique}:a`, 'v1'), cmd('SELECT', '2'), cmd('SET', `${unique}:b`, 'v2'), cmd('GET', `${unique}:b`)]))
    assert.deepEqual([await writer.frames.next(), await writer.frames.next(), await writer.frames.next(), await writer.frames.next()], ['+OK\r\n', '+OK\r\n', '+OK\r\n', '$2\r\nv2\r\n'])

    const want = [`"SET" "${unique}:a" "v1"`, `"SET" "${unique}:b" "v2"`, `"GET" "${unique}:b"`]
    const found: string[] = []
    const deadline = Date.now() + 3000
    while (found.length < want.length && Date.now() < deadline) {
      const frame = await m.frames.next(Math.max(1, deadline - Date.now()))
      assert.match(frame, MONITOR_LINE, 'only MONITOR lines reach a monitoring client')
      if (frame.includes(unique)) found.push(frame)
    }
    assert.equal(found.length, want.length, `monitor lines seen: ${JSON.stringify(found)}`)
    for (const [i, line] of found.entries()) {
      // The database shown is the client's: the SELECT made through respool is reflected.
      const db = i === 0 ? 0 : 2
      assert.match(line, new RegExp(`^\\+\\d+\\.\\d{6} \\[${db} 127\\.0\\.0\\.1:\\d+\\] ${want[i].replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\r\\n$`))
    }
    // Monitor lines go to the monitoring client only.
    assert.deepEqual(await writer.frames.available(), [])
  } finally {
    for (const c of opened) c.close()
  }
  await pinsReleased()
})

for (const resp of [2, 3] as const) {
  test(`RESP${resp}: MONITOR + PING pipelined, then RESET: same replies as Redis (+OK, +PONG, +RESET), then ordinary RESP2 replies, pin returned`, { timeout: 20000 }, async () => {
    const unique = `monr${resp}:${process.pid}:${Date.now()}`
    const result = await sameAsDirect(async (port, proxied, opened) => {
      const m = await connectFramed(port, opened)
      const writer = await connectFramed(port, opened)
      const out: string[] = []
      if (resp === 3) {
        m.client.write(cmd('HELLO', '3'))
        await m.frames.next() // the server map differs (client id, version fields)
      }
      m.client.write(Buffer.concat([cmd('MONITOR'), cmd('PING')]))
      out.push(...(await repliesAmongMonitorLines(m.frames, 2)).replies)
      writer.client.write(cmd('SET', `${unique}:w`, 'x'))
      out.push(await writer.frames.next())
      m.client.write(cmd('PING', 'again'))
      out.push(...(await repliesAmongMonitorLines(m.frames, 1)).replies)
      // RESET also returns the connection to RESP2: the missing key is $-1 afterwards.
      m.client.write(Buffer.concat([cmd('RESET'), cmd('SET', `${unique}:m`, 'y'), cmd('GET', `${unique}:m`), cmd('GET', `${unique}:missing`)]))
      out.push(...(await repliesAmongMonitorLines(m.frames, 4)).replies)
      if (proxied) {
        await pinsReleased()
        await waitForValue('upstream connections still monitoring', async () => (await upstreamWithFlag('O')).length, 0)
      }
      // No longer a monitor: another client's command shows up nowhere on this connection.
      writer.client.write(cmd('SET', `${unique}:w`, 'z'))
      out.push(await writer.frames.next())
      m.client.write(cmd('PING'))
      out.push(await m.frames.next())
      out.push(`leftover: ${JSON.stringify(await m.frames.available())}`)
      return out
    })
    assert.deepEqual(result, ['+OK\r\n', '+PONG\r\n', '+OK\r\n', '$5\r\nagain\r\n', '+RESET\r\n', '+OK\r\n', '$1\r\ny\r\n', '$-1\r\n', '+OK\r\n', '+PONG\r\n', 'leftover: []'])
  })
}

for (const pipelined of [false, true]) {
  test(`QUIT from a monitoring client${pipelined ? ' (pipelined with MONITOR)' : ''}: +OK and the connection closes, as with Redis; pin returned`, { timeout: 20000 }, async () => {
    const result = await sameAsDirect(async (port, proxied, opened) => {
      const m = await connectFramed(port, opened)
      const out: string[] = []
      if (pipelined) {
        m.client.write(Buffer.concat([cmd('MONITOR'), cmd('QUIT'), cmd('PING')]))
      } else {
        m.client.write(cmd('MONITOR'))
        out.push(...(await repliesAmongMonitorLines(m.frames, 1)).replies)
        m.client.write(Buffer.concat([cmd('QUIT'), cmd('PING')]))
      }
      const rest = await m.client.readUntilClose(3000)
      const { frames, rest: partial } = splitFrames(Buffer.from(rest, 'latin1'))
      for (const frame of frames) if (!isMonitorLine(frame)) out.push(frame)
      out.push(`closed: ${String(m.client.closed)}, partial: ${JSON.stringify(partial)}`)
      if (proxied) {
        await pinsReleased()
        await waitForValue('upstream connections still monitoring', async () => (await upstreamWithFlag('O')).length, 0)
      }
      return out
    })
    assert.deepEqual(result, ['+OK\r\n', '+OK\r\n', 'closed: true, partial: ""'])
  })
}

test('a monitoring client that disconnects abruptly gives its connection up (closed, not reused)', { timeout: 20000 }, async () => {
  const opened: RawClient[] = []
  try {
    const m = await connectFramed(proxy.address.port, opened)
    m.client.write(cmd('MONITOR'))
    assert.equal(await m.frames.next(), '+OK\r\n')
    await waitForValue('upstream monitors', async () => (await upstreamWithFlag('O')).length, 1)
    m.client.socket.resetAndDestroy()
    await pinsReleased()
    await waitForValue('upstream monitors', async () => (await upstreamWithFlag('O')).length, 0)
    const c = await connectFramed(proxy.address.port, opened)
    c.client.write(Buffer.concat([cmd('SET', 'mond:k', 'v'), cmd('GET', 'mond:k'), cmd('PING')]))
    assert.deepEqual([await c.frames.next(), await c.frames.next(), await c.frames.next()], ['+OK\r\n', '$1\r\nv\r\n', '+PONG\r\n'])
  } finally {
    for (const c of opened) c.close()
  }
})

// ---- 8. CLIENT TRACKING (RESP3) --------------------------------------------------------------

const INVALIDATE_K = '>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n'

test('CLIENT TRACKING ON (RESP3): the invalidation push for k is the one Redis sends; OFF returns the pin', { timeout: 20000 }, async () => {
  const result = await sameAsDirect(async (port, proxied, opened) => {
    const c = await connectFramed(port, opened)
    const other = await connectFramed(port, opened)
    const out: string[] = []
    const take = async (who: string, conn: FramedClient): Promise<void> => {
      try {
        out.push(`${who} ${await conn.frames.next()}`)
      } catch (err) {
        out.push(`${who} «${(err as Error).message}»`)
      }
    }
    other.client.write(cmd('SET', 'k', 'v1'))
    await take('other', other)
    c.client.write(cmd('HELLO', '3'))
    await c.frames.next() // the server map differs (client id, version fields)
    c.client.write(cmd('CLIENT', 'TRACKING', 'ON'))
    await take('c', c)
    if (proxied) assert.equal(proxy.router.pinCount, 1)
    c.client.write(Buffer.concat([cmd('GET', 'k'), cmd('CLIENT', 'GETREDIR'), cmd('CLIENT', 'TRACKINGINFO')]))
    for (let i = 0; i < 3; i++) await take('c', c)

    other.client.write(cmd('SET', 'k', 'v2'))
    await take('other', other)
    await take('c', c) // the invalidation

    // Tracked again by reading it again; a DEL invalidates too.
    c.client.write(cmd('GET', 'k'))
    await take('c', c)
    other.client.write(cmd('DEL', 'k'))
    await take('other', other)
    await take('c', c)

    c.client.write(cmd('CLIENT', 'TRACKING', 'OFF'))
    await take('c', c)
    if (proxied) await pinsReleased()
    c.client.write(cmd('GET', 'k'))
    await take('c', c)
    other.client.write(cmd('SET', 'k', 'v3'))
    await take('other', other)
    c.client.write(Buffer.concat([cmd('PING'), cmd('CLIENT', 'GETREDIR')]))
    await take('c', c)
    await take('c', c)
    out.push(`leftover: ${JSON.stringify(await c.frames.available())}`)
    return out
  })
  assert.equal(result[1], 'c +OK\r\n')
  assert.equal(result.filter((line) => line === `c ${INVALIDATE_K}`).length, 2, JSON.stringify(result))
  assert.ok(result.includes('c :-1\r\n'), 'GETREDIR after OFF')
  assert.equal(result.at(-1), 'leftover: []')
  await pinsReleased()
  assert.deepEqual(await upstreamWithFlag('t'), [], 'no upstream connection left with tracking on')
})

test('CLIENT TRACKING ON BCAST PREFIX (RESP3): prefix invalidations identical to Redis', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, opened) => {
    const c = await connectFramed(port, opened)
    const other = await connectFramed(port, opened)
    const out: string[] = []
    c.client.write(cmd('HELLO', '3'))
    await c.frames.next()
    c.client.write(cmd('CLIENT', 'TRACKING', 'ON', 'BCAST', 'PREFIX', 'trkb:'))
    out.push(await c.frames.next())
    other.client.write(Buffer.concat([cmd('SET', 'trkb:one', '1'), cmd('SET', 'unrelated', '1')]))
    out.push(await other.frames.next(), await other.frames.next())
    out.push(await c.frames.next())
    c.client.write(cmd('CLIENT', 'TRACKING', 'OFF'))
    out.push(await c.frames.next())
    if (proxied) await pinsReleased()
    c.client.write(cmd('PING'))
    out.push(await c.frames.next())
    out.push(`leftover: ${JSON.stringify(await c.frames.available())}`)
    return out
  })
})

test('CLIENT TRACKING (RESP3): a client invalidating its own key, pipelined, gets pushes and replies in Redis\'s order (with and without NOLOOP)', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, opened) => {
    const out: string[] = []
    for (const noloop of [false, true]) {
      const c = await connectFramed(port, opened)
      c.client.write(cmd('HELLO', '3'))
      await c.frames.next()
      c.client.write(Buffer.concat([
        cmd('CLIENT', 'TRACKING', 'ON', ...(noloop ? ['NOLOOP'] : [])),
        cmd('SET', 'trks:a', '1'), cmd('GET', 'trks:a'), cmd('MGET', 'trks:b', 'trks:c'),
        cmd('SET', 'trks:a', '2'), cmd('DEL', 'trks:b', 'trks:c'), cmd('GET', 'trks:a'), cmd('INCR', 'trks:a'), cmd('PING')
      ]))
      // 9 replies and, without NOLOOP, the invalidations in between.
      const frames: string[] = []
      for (;;) {
        try {
          const frame = await c.frames.next(1000)
          frames.push(frame)
          if (frame === '+PONG\r\n') break
        } catch (err) {
          frames.push(`«${(err as Error).message}»`)
          break
        }
      }
      out.push(`noloop=${String(noloop)}`, ...frames)
      c.client.write(cmd('CLIENT', 'TRACKING', 'OFF'))
      out.push(await c.frames.next())
      if (proxied) await pinsReleased()
      c.client.write(cmd('DEL', 'trks:a'))
      out.push(await c.frames.next())
      out.push(`leftover: ${JSON.stringify(await c.frames.available())}`)
    }
    return out
  })
})

test('CLIENT TRACKING ON … REDIRECT gets a clear -ERR from respool and pins nothing', { timeout: 10000 }, async () => {
  const opened: RawClient[] = []
  try {
    const c = await connectFramed(proxy.address.port, opened)
    for (const args of [['CLIENT', 'TRACKING', 'ON', 'REDIRECT', '1'], ['client', 'tracking', 'on', 'bcast', 'redirect', '7', 'prefix', 'x']]) {
      c.client.write(cmd(...args))
      const reply = await c.frames.next()
      assert.match(reply, /^-ERR respool: [^\r\n]*REDIRECT[^\r\n]*\r\n$/)
      assert.equal(proxy.router.pinCount, 0)
    }
    c.client.write(Buffer.concat([cmd('HELLO', '3'), cmd('CLIENT', 'TRACKING', 'ON', 'REDIRECT', '1')]))
    await c.frames.next()
    assert.match(await c.frames.next(), /^-ERR respool: [^\r\n]*REDIRECT[^\r\n]*\r\n$/)
    c.client.write(Buffer.concat([cmd('SET', 'trkr:k', 'v'), cmd('GET', 'trkr:k')]))
    assert.deepEqual([await c.frames.next(), await c.frames.next()], ['+OK\r\n', '$1\r\nv\r\n'])
    assert.equal(proxy.router.pinCount, 0)
    assert.deepEqual(await upstreamWithFlag('t'), [])
  } finally {
    for (const c of opened) c.close()
  }
})

test('a tracking client that disconnects abruptly gives its connection up; nobody else receives its invalidations', { timeout: 20000 }, async () => {
  const opened: RawClient[] = []
  try {
    const c = await connectFramed(proxy.address.port, opened)
    c.client.write(Buffer.concat([cmd('HELLO', '3'), cmd('CLIENT', 'TRACKING', 'ON'), cmd('GET', 'trkd:k')]))
    await c.frames.next()
    assert.equal(await c.frames.next(), '+OK\r\n')
    assert.equal(await c.frames.next(), '_\r\n')
    await waitForValue('upstream tracking connections', async () => (await upstreamWithFlag('t')).length, 1)
    c.client.socket.resetAndDestroy()
    await pinsReleased()
    await waitForValue('upstream tracking connections', async () => (await upstreamWithFlag('t')).length, 0)

    // Fresh RESP3 clients on whatever connections the pool hands out see only their replies.
    const others = await Promise.all([1, 2, 3].map(async () => await connectFramed(proxy.address.port, opened)))
    for (const o of others) {
      o.client.write(cmd('HELLO', '3'))
      await o.frames.next()
    }
    for (let round = 0; round < 10; round++) {
      await Promise.all(others.map(async (o, i) => {
        o.client.write(Buffer.concat([cmd('SET', 'trkd:k', `v${i}`), cmd('GET', `trkd:own${i}`), cmd('PING')]))
        assert.deepEqual([await o.frames.next(), await o.frames.next(), await o.frames.next()], ['+OK\r\n', '_\r\n', '+PONG\r\n'])
      }))
    }
    for (const o of others) assert.deepEqual(await o.frames.available(), [])
  } finally {
    for (const c of opened) c.close()
  }
})
