import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// A client reading large values at full speed must not hold up another client's small
// commands: respool reads a large reply a slice per turn of its event loop, so the small GET's
// reply, on another lane, is read in the same turn it arrives instead of after megabytes of the
// large one. Bounds are generous (a loaded 2-core machine): before, the small GET waited about
// 10 ms per command (a few hundred in 3 s) while a 64 MB reply streamed.

const BIG = 32 * 1024 * 1024
const SMALL = 'v'.repeat(16)

let redis: RedisServer
let proxy: ProxyServer
let seed: Redis

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 8 })
  seed = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  await seed.set('nb:big', Buffer.alloc(BIG, 0x61))
  await seed.set('nb:small', SMALL)
})
after(async () => {
  seed?.disconnect()
  await proxy?.destroy()
  await redis?.stop()
})

// The neighbour, in its own process (as a real one would be): pipelines 2 GETs of the large
// value, reads both replies at full speed, checks each one's header (a reply of the wrong length
// puts the next header out of place), and starts again.
// Prints "reply" after each complete reply, "bad" on a reply that is not the value.
const NEIGHBOUR = `
const net = require('node:net')
const [port, size] = process.argv.slice(1).map(Number)
const header = '$' + size + '\\r\\n'
const total = header.length + size + 2
const s = net.connect(port, '127.0.0.1')
let at = 0
let ok = true
let replies = 0
const ask = () => s.write('*2\\r\\n$3\\r\\nGET\\r\\n$6\\r\\nnb:big\\r\\n'.repeat(2))
s.on('connect', ask)
s.on('data', (d) => {
  for (let i = 0; i < d.length;) {
    const n = Math.min(d.length - i, total - at)
    if (at < header.length && d.toString('latin1', i, i + Math.min(n, header.length - at)) !== header.slice(at, at + Math.min(n, header.length - at))) ok = false
    i += n
    at += n
    if (at === total) {
      at = 0
      process.stdout.write(ok ? 'reply\\n' : 'bad\\n')
      if (++replies % 2 === 0) ask()
    }
  }
})
s.on('error', () => process.exit(1))
`

function startNeighbour (port: number): { child: ChildProcess, replies: () => number, bad: () => number } {
  const child = spawn(process.execPath, ['-e', NEIGHBOUR, String(port), String(BIG)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let replies = 0
  let bad = 0
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (line === 'reply') replies++
    else bad++
  })
  return { child, replies: () => replies, bad: () => bad }
}

const GET_SMALL = cmd('GET', 'nb:small')

/** Sends GET nb:small one at a time for `ms` and returns each latency (ms); every reply must be the value. */
async function probe (port: number, ms: number): Promise<number[]> {
  const client = await RawClient.connect(port)
  try {
    const expected = `$${SMALL.length}\r\n${SMALL}\r\n`
    const latencies: number[] = []
    const end = performance.now() + ms
    while (performance.now() < end) {
      const t0 = performance.now()
      client.write(GET_SMALL)
      const reply = await client.read(expected.length)
      latencies.push(performance.now() - t0)
      assert.equal(reply.toString('latin1'), expected)
    }
    return latencies.sort((a, b) => a - b)
  } finally {
    client.close()
  }
}

test('a small GET next to a client streaming 32 MB values stays fast, and the large replies come through intact', { timeout: 60000 }, async (t) => {
  const neighbour = startNeighbour(proxy.address.port)
  after(() => { neighbour.child.kill('SIGKILL') })
  try {
    // The neighbour is in full flow before the probe starts.
    await waitFor(() => neighbour.replies() >= 2, 'the neighbour read its first large values', 30000)
    const before = neighbour.replies()
    const latencies = await probe(proxy.address.port, 2000)
    const during = neighbour.replies() - before
    const p50 = latencies[latencies.length >> 1]
    const diag = `${latencies.length} GETs, p50 ${p50.toFixed(3)} ms, p90 ${latencies[Math.floor(latencies.length * 0.9)].toFixed(3)} ms, max ${latencies[latencies.length - 1].toFixed(1)} ms; the neighbour read ${during} large replies meanwhile`
    t.diagnostic(diag)
    // The neighbour kept streaming (the probe was not fast because the large value stood still).
    assert.ok(during >= 2, diag)
    assert.equal(neighbour.bad(), 0, 'every large reply is the value, framed as Redis framed it')
    assert.ok(latencies.length >= 400, diag)
    assert.ok(p50 < 4, diag)
  } finally {
    neighbour.child.kill('SIGKILL')
    if (neighbour.child.exitCode === null && neighbour.child.signalCode === null) await once(neighbour.child, 'exit')
  }
  // The lanes serve everybody afterwards.
  const after2 = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  try {
    assert.equal(await after2.get('nb:small'), SMALL)
  } finally {
    after2.disconnect()
  }
})

// The other direction: a neighbour sending large values (SET of 32 MB, one after the other, each
// written at full speed). respool reads a client's large command a slice per turn too.
// Prints "ok" after each +OK, "bad" on any other reply.
const WRITER = `
const net = require('node:net')
const [port, size] = process.argv.slice(1).map(Number)
const value = Buffer.alloc(size, 0x62)
const head = Buffer.from('*3\\r\\n$3\\r\\nSET\\r\\n$6\\r\\nnb:set\\r\\n$' + size + '\\r\\n')
const s = net.connect(port, '127.0.0.1')
let got = ''
const send = () => { s.write(head); s.write(value); s.write('\\r\\n') }
s.on('connect', send)
s.on('data', (d) => {
  got += d.toString('latin1')
  while (got.length >= 5) {
    process.stdout.write(got.startsWith('+OK\\r\\n') ? 'ok\\n' : 'bad\\n')
    got = got.slice(5)
    send()
  }
})
s.on('error', () => process.exit(1))
`

test('a small GET next to a client sending 32 MB values stays fast, and the large values arrive intact', { timeout: 60000 }, async (t) => {
  const child = spawn(process.execPath, ['-e', WRITER, String(proxy.address.port), String(BIG)], { stdio: ['ignore', 'pipe', 'inherit'] })
  after(() => { child.kill('SIGKILL') })
  let oks = 0
  let bad = 0
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (line === 'ok') oks++
    else bad++
  })
  try {
    await waitFor(() => oks >= 2, 'the neighbour wrote its first large values', 30000)
    const before = oks
    const latencies = await probe(proxy.address.port, 2000)
    const during = oks - before
    const p50 = latencies[latencies.length >> 1]
    const diag = `${latencies.length} GETs, p50 ${p50.toFixed(3)} ms, p90 ${latencies[Math.floor(latencies.length * 0.9)].toFixed(3)} ms, max ${latencies[latencies.length - 1].toFixed(1)} ms; the neighbour wrote ${during} large values meanwhile`
    t.diagnostic(diag)
    assert.ok(during >= 2, diag)
    assert.equal(bad, 0, 'every large SET was answered +OK')
    // Read 32 chunks at a time, the sender held every small GET up: p50 7.7 ms over some 250 GETs.
    // The median tells that apart on a loaded machine, where the count alone (361 once, with a
    // benchmark running beside the suite) does not.
    assert.ok(latencies.length >= 100, diag)
    assert.ok(p50 < 4, diag)
  } finally {
    child.kill('SIGKILL')
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit')
  }
  // The value Redis holds is the one sent, whole.
  const stored = await seed.getBuffer('nb:set')
  assert.ok(stored !== null && stored.equals(Buffer.alloc(BIG, 0x62)), 'the stored value is the one sent')
})
