import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startProxy } from '../helpers/proxy.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import { startCheckedBystanders } from '../helpers/checked-bystanders.js'
import { RawClient, cmd, sentinel } from '../helpers/raw-client.js'
import { FrameReader, splitFrames } from '../helpers/resp-frames.js'
import { prng } from '../helpers/prng.js'


const VALID: Buffer[] = [
  cmd('SET', 'fz', 'v'), cmd('GET', 'fz'), cmd('PING'), cmd('MULTI'), cmd('EXEC'), cmd('SUBSCRIBE', 'c'),
  cmd('UNSUBSCRIBE'), cmd('HELLO', '3'), cmd('SELECT', '1'), cmd('BLPOP', 'fzq', '0.01'), cmd('CLIENT', 'REPLY', 'OFF'),
  cmd('WATCH', 'fz'), cmd('ECHO', 'x\r\ny'), Buffer.from('PING\r\n'), Buffer.from('SET "a b" c\r\n'),
  // Numbers Redis refuses for their leading zero: a length (a protocol error) and a database index.
  Buffer.from('*1\r\n$04\r\nPING\r\n'), cmd('SELECT', '01')
]

function mutate (input: Buffer, rnd: () => number): Buffer {
  const bytes = [...input]
  const edits = 1 + Math.floor(rnd() * 4)
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(rnd() * (bytes.length + 1))
    const op = rnd()
    if (op < 0.4 && bytes.length > 0) bytes[Math.min(at, bytes.length - 1)] = Math.floor(rnd() * 256)
    else if (op < 0.7) bytes.splice(at, 0, Math.floor(rnd() * 256))
    else if (op < 0.85) bytes.splice(at, 1)
    else bytes.splice(at, 0, ...Buffer.from(['*2147483647\r\n', '$-2\r\n', '$99999999999\r\n', '*-5\r\n', '?\r\n', '$3\r\nab'][Math.floor(rnd() * 6)]))
  }
  return Buffer.from(bytes)
}

interface Outcome {
  frames: string[]
  /** The proxy closed the connection. */
  closed: boolean
  /** The sentinel sent after the input was answered (every reply to the input came before it). */
  sentinelSeen: boolean
  /** Bytes left over that are not a whole frame. */
  partial: string
}

/**
 * Sends one input on a fresh connection, then a sentinel, and reads what the proxy answers as
 * whole RESP frames until the sentinel's reply, the proxy closing the connection, or quiet (an
 * input that ends inside a command swallows the sentinel, so nothing more is due): reading stops
 * after `quietMs` without a byte or `capMs` in all, which only bounds how much is looked at.
 */
async function send (port: number, input: Buffer, quietMs = 300, capMs = 3000): Promise<Outcome> {
  const client = await RawClient.connect(port)
  try {
    const s = sentinel()
    client.write(Buffer.concat([input, s.command]))
    const started = Date.now()
    let last = Date.now()
    let seen = 0
    for (;;) {
      const { frames } = splitFrames(client.buffered)
      if (frames.includes(s.reply) || client.closed) break
      if (client.buffered.length !== seen) { seen = client.buffered.length; last = Date.now() }
      if (Date.now() - last >= quietMs || Date.now() - started >= capMs) break
      await new Promise<void>((resolve) => {
        const done = (): void => { clearTimeout(timer); client.socket.off('data', done); client.socket.off('close', done); resolve() }
        const timer = setTimeout(done, quietMs)
        client.socket.on('data', done)
        client.socket.on('close', done)
      })
    }
    const { frames, rest } = splitFrames(client.buffered)
    const at = frames.indexOf(s.reply)
    return { frames: at >= 0 ? frames.slice(0, at) : frames, closed: client.closed, sentinelSeen: at >= 0, partial: at >= 0 ? '' : rest }
  } finally {
    client.close()
  }
}

/** What is wrong with what one sender got back, or null. */
function problem (input: Buffer, out: Outcome): string | null {
  const show = (): string => `input ${JSON.stringify(input.toString('latin1'))} got ${JSON.stringify(out.frames)}${out.partial !== '' ? ` + partial ${JSON.stringify(out.partial)}` : ''}`
  // A failed shared lane would cost the bystanders too; on the sender it shows as these errors.
  const laneFailure = out.frames.find((f) => /^-ERR respool: upstream/.test(f))
  if (laneFailure !== undefined) return `an upstream failure reached the sender: ${show()}`
  // A reply is never cut off: a connection the proxy closed ends on a whole frame, the last of
  // which says why (Redis's own protocol error wording).
  if (out.closed && out.partial !== '') return `closed in the middle of a reply: ${show()}`
  if (out.closed && !out.sentinelSeen && !/^-ERR Protocol error: /.test(out.frames.at(-1) ?? '') && !out.frames.includes('+OK\r\n')) {
    return `closed without a protocol error: ${show()}`
  }
  return null
}

test('random and mutated input never crashes respool, never disturbs clients on the same lane, never breaks the bound', { timeout: 180000 }, async (t) => {
  // Redis refuses any connection beyond the pool of 2 and this test's admin connection.
  const bounded = await startBoundedRedis(2 + 1)
  after(async () => { await bounded.stop() })
  const proxy = await startProxy({ upstream: bounded.redis.url, poolSize: 2, maxPins: 1, maxInlineLength: 4096, acquireTimeoutMs: 200, upstreamIdleTimeoutMs: 600_000 })
  after(async () => { await proxy.destroy() })
  // A subscriber holds the only pin for the whole run, so the other connection is the one shared
  // lane: every sender and every bystander goes through it. (Inputs that need a pin wait for it
  // and are refused after the acquire timeout.)
  const holder = await RawClient.connect(proxy.address.port)
  after(() => { holder.close() })
  const held = new FrameReader(holder)
  holder.write(cmd('SUBSCRIBE', 'fuzz-holder'))
  assert.equal(await held.next(), '*3\r\n$9\r\nsubscribe\r\n$11\r\nfuzz-holder\r\n:1\r\n')
  assert.equal(proxy.router.pinCount, 1)
  const bystanders = await startCheckedBystanders(proxy.address.port)
  after(async () => { await bystanders.stop() })
  // More in database 1, which some inputs select: the lane switches between them all the time.
  const inDb1 = await startCheckedBystanders(proxy.address.port, { db: 1, count: 2 })
  after(async () => { await inDb1.stop() })
  await bystanders.moreRounds(1)
  await inDb1.moreRounds(1)
  assert.equal(proxy.router.laneCount, 1)
  const lane = proxy.sessions().find((s) => s.id === bystanders.ids[0])?.upstreamId
  assert.ok(typeof lane === 'number')
  const connects = proxy.pool.counters.connects

  const rnd = prng(0x5eed)
  const problems: string[] = []
  let answered = 0
  let closedByProxy = 0
  const INPUTS = 400
  const deadline = Date.now() + 90_000
  let sent = 0
  for (; sent < INPUTS && Date.now() < deadline; sent += 8) {
    const batch: Array<Promise<void>> = []
    const inputs: string[] = []
    for (let j = 0; j < 8; j++) {
      const kind = rnd()
      let input: Buffer
      if (kind < 0.25) {
        input = Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)))
      } else {
        const parts = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => VALID[Math.floor(rnd() * VALID.length)])
        input = mutate(Buffer.concat(parts), rnd)
      }
      inputs.push(input.toString('latin1'))
      batch.push(send(proxy.address.port, input).then((out) => {
        if (out.sentinelSeen) answered++
        if (out.closed && !out.sentinelSeen) closedByProxy++
        const p = problem(input, out)
        if (p !== null) problems.push(p)
      }))
    }
    await Promise.all(batch)
    assert.ok(proxy.router.laneCount <= 1, `lanes: ${proxy.router.laneCount}`)
    // Stop at the first batch that hurt anybody, with its inputs (one of them did it).
    const failures = [...bystanders.failures, ...inDb1.failures]
    if (failures.length > 0 || problems.length > 0) {
      assert.deepEqual({ bystanders: failures, senders: problems, batch: inputs }, { bystanders: [], senders: [], batch: inputs })
    }
  }
  t.diagnostic(`${sent} inputs: ${answered} answered up to the sentinel, ${closedByProxy} closed by the proxy; bystanders ran ${bystanders.rounds} rounds`)
  await bystanders.moreRounds(1)
  assert.equal(proxy.sessions().find((s) => s.id === bystanders.ids[0])?.upstreamId, lane, 'the bystanders are still on the same lane')
  assert.ok(bystanders.rounds > 10, `bystanders ran ${bystanders.rounds} rounds`)
  assert.deepEqual(await bystanders.stop(), [], 'bystanders on the lane got exactly their replies')
  assert.deepEqual(await inDb1.stop(), [], 'bystanders in database 1 on the lane got exactly their replies')
  assert.deepEqual(problems, [])
  assert.ok(answered > 0 && closedByProxy > 0, `both kinds of input were sent (${answered} answered, ${closedByProxy} closed)`)
  // One lane all along, never dropped and replaced: no input cost it.
  assert.equal(proxy.router.laneCount, 1)
  assert.equal(proxy.router.pinCount, 1)
  assert.equal(proxy.pool.counters.connects, connects, 'no upstream connection was opened during the run')
  // The subscriber holding the pin got nothing meant for anybody else.
  holder.write(cmd('PING'))
  assert.equal(await held.next(), '*2\r\n$4\r\npong\r\n$0\r\n\r\n')
  assert.deepEqual(await held.available(), [])
  assert.ok(await bounded.upstreamConnections() <= 2)
  await bounded.assertNoneRejected()
})
