import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { runScript, step, showFrames } from '../helpers/script.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * CLIENT UNBLOCK and CLIENT KILL on respool's clients, by respool's ids, with Redis's replies;
 * Redis's own ids of respool's connections are out of reach.
 */

let direct: RedisServer
let upstream: RedisServer
let proxy: ProxyServer

before(async () => {
  direct = await startRedis()
  upstream = await startRedis()
  proxy = await startProxy({ upstream: upstream.url, poolSize: 4 })
})

after(async () => {
  await proxy?.destroy()
  await upstream?.stop()
  await direct?.stop()
})

const on = commandOn

test('argument errors and misses answer exactly as Redis does', { timeout: 20000 }, async () => {
  const steps = [step(17,
    ['CLIENT', 'UNBLOCK', 'abc'], ['CLIENT', 'UNBLOCK', '99999', 'foo'], ['CLIENT', 'UNBLOCK', '99999', 'timeout', 'x'],
    ['CLIENT', 'UNBLOCK', '99999'], ['CLIENT', 'UNBLOCK', '-1', 'ERROR'], ['CLIENT', 'KILL', '1.2.3.4:5'], ['CLIENT', 'KILL', 'ID', 'abc'],
    ['CLIENT', 'KILL', 'ID', '0'], ['CLIENT', 'KILL', 'ID', '99999'], ['CLIENT', 'KILL', 'FOO', 'bar'], ['CLIENT', 'KILL', 'TYPE', 'foo'],
    ['CLIENT', 'KILL', 'SKIPME', 'maybe'], ['CLIENT', 'KILL'], ['CLIENT', 'KILL', 'TYPE', 'master'], ['CLIENT', 'KILL', 'ID', '5', 'SKIPME'],
    ['CLIENT', 'KILL', 'ADDR', '1.2.3.4:5', 'ID', '3'], ['CLIENT', 'KILL', 'LADDR', 'nowhere'])]
  const want = await runScript(direct.port, steps)
  const got = await runScript(proxy.address.port, steps)
  assert.deepEqual(got, want, `direct ${showFrames(want)}, through respool ${showFrames(got)}`)
})

/** Runs: A blocks in `blocking`, B unblocks A by A's CLIENT ID; returns A's and B's replies. */
async function unblockScript (port: number, blocking: string[], mode: string[], blocked: () => Promise<void>): Promise<string[]> {
  const a = await RawClient.connect(port)
  const b = await RawClient.connect(port)
  try {
    const af = new FrameReader(a)
    const bf = new FrameReader(b)
    a.write(cmd('CLIENT', 'ID'))
    const id = (await af.next()).slice(1, -2)
    a.write(cmd(...blocking))
    await blocked()
    b.write(cmd('CLIENT', 'UNBLOCK', id, ...mode))
    const unblockReply = await bf.next()
    const blockedReply = await af.next()
    b.write(cmd('CLIENT', 'UNBLOCK', id, ...mode)) // not blocked any more
    return [unblockReply, blockedReply, await bf.next()]
  } finally {
    a.close()
    b.close()
  }
}

async function blockedInRedis (server: RedisServer): Promise<void> {
  await waitFor(async () => /blocked_clients:1\r\n/.test(await on(server.port, 'INFO', 'clients')), 'one client blocked in Redis')
}

test('CLIENT UNBLOCK ends a parked BLPOP (TIMEOUT and ERROR, RESP2 and RESP3) and a pinned WAIT with Redis\'s replies; the unblocked BLPOP takes nothing', { timeout: 30000 }, async () => {
  const parked = async (): Promise<void> => { await waitFor(() => proxy.parking?.stats.parked === 1, 'one parked waiter') }
  for (const mode of [[], ['TIMEOUT'], ['ERROR']]) {
    const want = await unblockScript(direct.port, ['BLPOP', 'cc:q', '0'], mode, async () => { await blockedInRedis(direct) })
    const got = await unblockScript(proxy.address.port, ['BLPOP', 'cc:q', '0'], mode, parked)
    assert.deepEqual(got, want, `BLPOP, ${mode.join('') || 'no mode'}`)
  }
  // RESP3: the timeout reply is `_`.
  const resp3 = async (port: number, blocked: () => Promise<void>): Promise<string[]> => {
    const a = await RawClient.connect(port)
    const af = new FrameReader(a)
    a.write(cmd('HELLO', '3'))
    await af.next()
    a.write(cmd('CLIENT', 'ID'))
    const id = (await af.next()).slice(1, -2)
    a.write(cmd('BZPOPMIN', 'cc:z', '0'))
    await blocked()
    const reply = await on(port, 'CLIENT', 'UNBLOCK', id)
    const frames = [reply, await af.next()]
    a.close()
    return frames
  }
  assert.deepEqual(await resp3(proxy.address.port, parked), await resp3(direct.port, async () => { await blockedInRedis(direct) }))
  await waitFor(() => proxy.parking?.stats.parked === 0, 'nobody parked')
  // Nothing was taken for the unblocked waiters: a push now stays in Redis.
  assert.equal(await on(proxy.address.port, 'RPUSH', 'cc:q', 'kept'), ':1\r\n')
  assert.equal(await on(upstream.port, 'LRANGE', 'cc:q', '0', '-1'), '*1\r\n$4\r\nkept\r\n')
  // WAIT always blocks on a pin of its own: Redis ends it, by the id only respool knows.
  const wantWait = await unblockScript(direct.port, ['WAIT', '1', '0'], [], async () => { await blockedInRedis(direct) })
  const gotWait = await unblockScript(proxy.address.port, ['WAIT', '1', '0'], [], async () => { await blockedInRedis(upstream) })
  assert.deepEqual(gotWait, wantWait, 'WAIT')
})

test('Redis\'s own ids of respool\'s connections cannot be unblocked or killed through respool', { timeout: 20000 }, async () => {
  const waiter = await RawClient.connect(proxy.address.port)
  after(() => { waiter.close() })
  const wf = new FrameReader(waiter)
  waiter.write(cmd('BLPOP', 'cc:guarded', '0'))
  await waitFor(() => proxy.parking?.stats.parked === 1, 'one parked waiter')
  await blockedInRedis(upstream) // the watcher
  const list = await on(upstream.port, 'CLIENT', 'LIST')
  const redisIds = [...list.matchAll(/id=(\d+) /g)].map((m) => m[1])
  const sessionIds = new Set(proxy.sessions().map((s) => String(s.id)))
  for (const id of redisIds.filter((i) => !sessionIds.has(i))) {
    assert.equal(await on(proxy.address.port, 'CLIENT', 'UNBLOCK', id), ':0\r\n', `Redis id ${id}`)
    assert.equal(await on(proxy.address.port, 'CLIENT', 'KILL', 'ID', id), ':0\r\n', `Redis id ${id}`)
  }
  assert.match(await on(upstream.port, 'INFO', 'clients'), /blocked_clients:1\r\n/, 'the watcher still waits')
  await on(upstream.port, 'RPUSH', 'cc:guarded', 'v')
  assert.equal(await wf.next(5000), '*2\r\n$10\r\ncc:guarded\r\n$1\r\nv\r\n')
})

test('CLIENT KILL closes respool clients by ID, ADDR, TYPE and USER (SKIPME yes by default), and the old ip:port form', { timeout: 20000 }, async () => {
  const connect = async (): Promise<{ c: RawClient, f: FrameReader, id: string, addr: string }> => {
    const c = await RawClient.connect(proxy.address.port)
    const f = new FrameReader(c)
    c.write(cmd('CLIENT', 'INFO'))
    const info = await f.next()
    return { c, f, id: /id=(\d+)/.exec(info)?.[1] ?? '', addr: /addr=(\S+)/.exec(info)?.[1] ?? '' }
  }
  const closed = async (c: RawClient): Promise<void> => { await c.readUntilClose(5000) }
  const killer = await connect()
  const byId = await connect()
  const byAddr = await connect()
  const old = await connect()
  const sub = await connect()
  after(() => { for (const x of [killer, byId, byAddr, old, sub]) x.c.close() })
  sub.c.write(cmd('SUBSCRIBE', 'cc:chan'))
  await sub.f.next()
  killer.c.write(cmd('CLIENT', 'KILL', 'ID', byId.id))
  assert.equal(await killer.f.next(), ':1\r\n')
  await closed(byId.c)
  killer.c.write(cmd('CLIENT', 'KILL', 'ADDR', byAddr.addr, 'SKIPME', 'yes'))
  assert.equal(await killer.f.next(), ':1\r\n')
  await closed(byAddr.c)
  killer.c.write(cmd('CLIENT', 'KILL', old.addr))
  assert.equal(await killer.f.next(), '+OK\r\n')
  await closed(old.c)
  killer.c.write(cmd('CLIENT', 'KILL', 'TYPE', 'pubsub'))
  assert.equal(await killer.f.next(), ':1\r\n')
  await closed(sub.c)
  // USER default matches every other client (the killer is skipped) …
  const others = await Promise.all([connect(), connect()])
  after(() => { for (const x of others) x.c.close() })
  await waitFor(() => proxy.sessions().length === 3, 'three clients')
  killer.c.write(cmd('CLIENT', 'KILL', 'USER', 'default'))
  assert.equal(await killer.f.next(), ':2\r\n')
  for (const x of others) await closed(x.c)
  // … and SKIPME no takes the caller too: it gets its reply, then its connection closes.
  killer.c.write(cmd('CLIENT', 'KILL', 'ID', killer.id, 'SKIPME', 'no'))
  assert.equal(await killer.f.next(), ':1\r\n')
  await closed(killer.c)
})
