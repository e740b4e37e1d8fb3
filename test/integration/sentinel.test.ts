import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as delay } from 'node:timers/promises'
import net from 'node:net'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { startSentinelSetup, waitForReplica, type SentinelSetup } from '../helpers/sentinel-setup.js'
import { freePort } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { commandOn } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// One master, one replica and three sentinels for the tests in this file, which run in order:
// the last one kills the master.
let setup: SentinelSetup
before(async () => { setup = await startSentinelSetup() })
after(async () => { await setup?.stop() })

const now = (): number => performance.timeOrigin + performance.now()

/** Clients writing unique keys one at a time through respool; every outcome is recorded. */
interface Outcome { ok: boolean, sentAt: number, at: number, error?: string }

/** The first success of a command sent after `t` (a reply read after `t` may have been sent before it). */
function firstOkAfter (outcomes: Map<string, Outcome>, t: number): number {
  return Math.min(...[...outcomes.values()].filter((o) => o.ok && o.sentAt > t).map((o) => o.at))
}

function startWriters (port: number, count: number): { outcomes: Map<string, Outcome>, stop: () => Promise<void> } {
  const outcomes = new Map<string, Outcome>()
  let running = true
  const loops = Array.from({ length: count }, async (_, w) => {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableOfflineQueue: true })
    client.on('error', () => {})
    for (let n = 0; running; n++) {
      const key = `w:${w}:${n}`
      const sentAt = now()
      try {
        await client.set(key, String(n))
        outcomes.set(key, { ok: true, sentAt, at: now() })
      } catch (err) {
        outcomes.set(key, { ok: false, sentAt, at: now(), error: (err as Error).message })
        await delay(5)
      }
    }
    client.disconnect()
  })
  return { outcomes, stop: async () => { running = false; await Promise.all(loops) } }
}

/** MONITOR on a node: every SET of a writer's key, with the time Redis ran it (ms since the epoch). */
async function monitorWrites (port: number): Promise<{ writes: Array<{ at: number, key: string }>, stop: () => void }> {
  const writes: Array<{ at: number, key: string }> = []
  const socket = net.connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  await once(socket, 'connect')
  let buffer = ''
  let started: () => void = () => {}
  const ok = new Promise<void>((resolve) => { started = resolve })
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('latin1')
    const lines = buffer.split('\r\n')
    buffer = lines.pop() ?? ''
    for (const line of lines) {
      if (line === '+OK') started()
      const m = /^\+(\d+\.\d+) \[\d+ [^\]]+\] "set" "(w:[^"]+)"/i.exec(line)
      if (m !== null) writes.push({ at: Number(m[1]) * 1000, key: m[2] })
    }
  })
  socket.write('MONITOR\r\n')
  await ok
  return { writes, stop: () => { socket.destroy() } }
}

async function proxyFor (s: SentinelSetup, sentinels = s.sentinelAddresses, extra = {}): Promise<ProxyServer> {
  return await startProxy({ sentinels, sentinelMaster: s.name, poolSize: 6, metricsPort: 0, ...extra })
}

test('starts with a sentinel down, finds the master through the others and learns every sentinel', { timeout: 20000 }, async () => {
  const dead = `127.0.0.1:${await freePort()}`
  const proxy = await proxyFor(setup, [dead, setup.sentinelAddresses[0]])
  after(async () => { await proxy.destroy() })
  const master = await setup.masterPort()
  await waitFor(() => proxy.topology.master?.address.port === master, 'respool verified the master')
  assert.equal(await commandOn(proxy.address.port, 'SET', 'start', 'ok'), '+OK\r\n')
  assert.equal(await setup.nodeClient(master).get('start'), 'ok')
  const known = (proxy.topology as unknown as { sentinels: Array<{ port: number }> }).sentinels.map((s) => s.port).sort()
  for (const s of setup.sentinels) assert.ok(known.includes(s.port), `knows sentinel ${s.port}: ${known.join(',')}`)
  const ready = await fetch(`http://127.0.0.1:${proxy.httpAddress?.port}/readyz`)
  assert.equal(ready.status, 200)
})

test('follows SENTINEL FAILOVER back and forth under write load: at most one error per command in flight, no write to a demoted master', { timeout: 60000 }, async (t) => {
  const proxy = await proxyFor(setup)
  after(async () => { await proxy.destroy() })
  const switches: Array<{ at: number, from: number }> = []
  proxy.topology.onChange((previous) => { if (previous !== null) switches.push({ at: now(), from: previous.address.port }) })
  await waitFor(() => proxy.topology.master !== null, 'a verified master')

  // Pinned clients: a transaction, a WATCH and a subscriber are disconnected by a failover.
  const pinned = await Promise.all(['MULTI', 'WATCH'].map(async (name) => {
    const c = await RawClient.connect(proxy.address.port)
    c.write(name === 'WATCH' ? cmd('WATCH', 'k') : Buffer.concat([cmd('MULTI'), cmd('SET', 'in-multi', '1')]))
    // (No check that nothing follows: inside MULTI the check itself would be queued.)
    await c.readExactly(name === 'MULTI' ? '+OK\r\n+QUEUED\r\n' : '+OK\r\n', { sentinel: false })
    return c
  }))
  // A subscriber shares the hub's connection: it stays subscribed across the failovers (the hub
  // subscribes again on the new master) and gets what is published there.
  const subscriber = await RawClient.connect(proxy.address.port)
  after(() => { subscriber.close() })
  subscriber.write(cmd('SUBSCRIBE', 'ch'))
  await subscriber.readExactly('*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n', { sentinel: false })
  // A parked BLPOP is served by the new master.
  const blocked = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
  blocked.on('error', () => {})
  after(() => { blocked.disconnect() })
  const popped = blocked.blpop('parked-list', 0)
  await waitFor(() => (proxy.parking?.stats.parked ?? 0) === 1, 'the BLPOP is parked')

  const writers = startWriters(proxy.address.port, 6)
  const rounds: Array<{ errors: number, recoverMs: number, lateOnOld: number }> = []
  try {
    await waitFor(() => writers.outcomes.size > 200, 'writes flow')
    for (let round = 0; round < 3; round++) {
      const old = await setup.masterPort()
      // Every command the old master runs from here on is recorded (until Sentinel demotes it
      // and kills this connection too).
      const seen = await monitorWrites(old)
      const switchesBefore = switches.length
      const started = now()
      const next = await setup.failover()
      await waitFor(() => proxy.topology.master?.address.port === next, 'respool follows the new master', 10000)
      const change = switches[switchesBefore]
      assert.ok(change !== undefined && change.from === old, 'respool switched away from the old master')
      // Writes succeed again on the new master.
      await waitFor(() => [...writers.outcomes.values()].some((o) => o.ok && o.sentAt > change.at), 'writes succeed after the switch', 10000)
      const firstOk = firstOkAfter(writers.outcomes, change.at)
      await delay(200)
      seen.stop()
      const errors = [...writers.outcomes.entries()].filter(([, o]) => !o.ok && o.at >= started)
      const failed = new Set(errors.map(([key]) => key))
      // Anything the old master ran after respool saw the switch was written before it, and its
      // reply never came back (the connection was closed): its client got an error.
      const late = seen.writes.filter((s) => s.at > change.at)
      for (const s of late) assert.ok(failed.has(s.key), `the old master ran ${s.key} after the switch and its client was told it succeeded`)
      // Each writer has one command in flight at a time: at most one error per writer.
      assert.ok(errors.length <= 6, `errors in this failover: ${errors.length}: ${errors.slice(0, 8).map(([k, o]) => `${k}: ${o.error ?? ''}`).join('; ')}`)
      rounds.push({ errors: errors.length, recoverMs: Math.round(firstOk - change.at), lateOnOld: late.length })
      await waitForReplica(setup, old, next)
    }
  } finally {
    await writers.stop()
  }
  t.diagnostic(`failovers: ${JSON.stringify(rounds)}`)

  for (const c of pinned) await waitFor(() => c.closed, 'a pinned client is disconnected by the failover')
  assert.equal(subscriber.closed, false, 'the subscriber stays connected')
  await waitFor(async () => await commandOn(proxy.address.port, 'PUBLISH', 'ch', 'after-failovers') === ':1\r\n', 'the hub subscribed on the new master')
  assert.equal(await subscriber.readExactly('*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$15\r\nafter-failovers\r\n', { sentinel: false }), '*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$15\r\nafter-failovers\r\n')
  // The parked BLPOP waits on the current master and gets what is pushed there.
  assert.equal(await commandOn(proxy.address.port, 'RPUSH', 'parked-list', 'after-failovers'), ':1\r\n')
  assert.deepEqual(await popped, ['parked-list', 'after-failovers'])

  const master = await setup.masterPort()
  const pools = await commandOn(proxy.address.port, 'RESPOOL', 'POOLS')
  assert.match(pools, new RegExp(`upstream_master:127\\.0\\.0\\.1:${master}\\r\\n`))
  assert.match(pools, /upstream_failovers:3\r\n/)
  const metrics = await (await fetch(`http://127.0.0.1:${proxy.httpAddress?.port}/metrics`)).text()
  assert.match(metrics, new RegExp(`respool_upstream_master\\{master="127\\.0\\.0\\.1:${master}",kind="sentinel"\\} 1`))
  assert.match(metrics, /respool_upstream_failovers_total 3/)
})

test('kill -9 of the master: /readyz turns 503, the sentinels elect the replica and respool moves to it', { timeout: 30000 }, async (t) => {
  const proxy = await proxyFor(setup, setup.sentinelAddresses, { acquireTimeoutMs: 5000 })
  after(async () => { await proxy.destroy() })
  await waitFor(() => proxy.topology.master !== null, 'a verified master')
  const writers = startWriters(proxy.address.port, 4)
  let switchedAt = 0
  proxy.topology.onChange((previous) => { if (previous !== null && switchedAt === 0) switchedAt = now() })
  let notReady = false
  try {
    await waitFor(() => writers.outcomes.size > 100, 'writes flow')
    const old = await setup.masterPort()
    const killedAt = now()
    await (setup.nodes.get(old) as { kill: () => Promise<void> }).kill()
    await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${proxy.httpAddress?.port}/readyz`)
      if (r.status === 503) notReady = true
      return notReady
    }, '/readyz says 503 while the master is gone', 10000)
    const next = [...setup.nodes.keys()].find((p) => p !== old) as number
    await waitFor(() => proxy.topology.master?.address.port === next, 'respool follows the elected master', 20000)
    await waitFor(() => [...writers.outcomes.values()].some((o) => o.ok && o.sentAt > switchedAt), 'writes succeed again', 10000)
    const firstOk = firstOkAfter(writers.outcomes, killedAt)
    const errors = [...writers.outcomes.values()].filter((o) => !o.ok && o.at >= killedAt).length
    t.diagnostic(`kill -9: respool switched ${Math.round(switchedAt - killedAt)} ms after the kill; first write sent after the kill succeeded ${Math.round(firstOk - killedAt)} ms after it; ${errors} errors over 4 writers`)
  } finally {
    await writers.stop()
  }
  const ready = await fetch(`http://127.0.0.1:${proxy.httpAddress?.port}/readyz`)
  assert.equal(ready.status, 200)
})
