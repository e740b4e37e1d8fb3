import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy, holdPin } from '../helpers/proxy.js'
import { RawClient } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { cmd } from '../helpers/raw-client.js'
import { prng } from '../helpers/prng.js'
import { startBystanders } from '../helpers/bystanders.js'

/**
 * Differential frame fuzzer: near-valid frames (the header and length lines Redis is strict
 * about) go to Redis directly and through respool. respool must accept exactly what Redis
 * accepts: the sender's reply bytes are the same, it is closed exactly when Redis closes it,
 * and clients pipelining on the same shared lane meanwhile never see an error (a frame respool
 * let through but Redis refused would close that lane under them).
 */

const SEED = Number(process.env.RESPOOL_FRAMING_SEED ?? 0x0f2a3e)
const CASES = Number(process.env.RESPOOL_FRAMING_CASES ?? 400)

const TEMPLATES: Buffer[] = [
  cmd('PING'),
  cmd('ECHO', 'abc'),
  cmd('GET', 'fzd:none'),
  Buffer.concat([cmd('PING'), cmd('ECHO', 'x')])
]

/** Number spellings Redis refuses or treats specially. */
const NUMBER_FORMS = (n: number): string[] => [
  `0${n}`, `00${n}`, `-0`, `+${n}`, ` ${n}`, `${n} `, '', '-', `${n}x`, `-${n}`, '0',
  '99999999999999999999', '9223372036854775807', '9223372036854775808', '-9223372036854775808',
  '-9223372036854775809', '2147483648', String(n), String(n + 1), String(Math.max(0, n - 1))
]

/** Mutates one header or line ending of a valid frame the way a buggy client would. */
function mutate (frame: Buffer, rnd: () => number): Buffer {
  const text = frame.toString('latin1')
  const headers: Array<{ at: number, end: number, sign: string, value: number }> = []
  const re = /([*$])(\d+)\r\n/g
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    headers.push({ at: m.index, end: m.index + m[0].length, sign: m[1], value: Number(m[2]) })
  }
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]
  const h = pick(headers)
  const op = rnd()
  let out: string
  if (op < 0.55) {
    out = text.slice(0, h.at) + h.sign + pick(NUMBER_FORMS(h.value)) + '\r\n' + text.slice(h.end)
  } else if (op < 0.65) {
    // The byte after CR: Redis skips it unchecked.
    out = text.slice(0, h.end - 1) + pick(['X', '\r', '\0', '*', '$']) + text.slice(h.end)
  } else if (op < 0.75) {
    // The type byte: '$' replaced.
    out = text.slice(0, h.at) + pick(['%', '*', ':', '\r', '\n', '\u00e9', 'a', ' ']) + text.slice(h.at + 1)
  } else if (op < 0.82) {
    // A NUL inside the header line.
    out = text.slice(0, h.at + 1) + '\0' + text.slice(h.at + 1)
  } else if (op < 0.9) {
    // The two bytes after a payload: Redis skips them unchecked.
    const crlf = text.lastIndexOf('\r\n')
    out = text.slice(0, crlf) + pick(['xx', '\n\r', '\r\r', '\0\0']) + text.slice(crlf + 2)
  } else {
    // Inline forms.
    out = pick(['PING\n', 'PING\r\n', 'ECHO "a b"\r\n', 'ECHO "a\r\n', 'ECHO \'a\'b\r\n', '\r\n', 'PI\0NG\r\n', 'ECHO a\0b\r\n', '  \n'])
  }
  return Buffer.from(out, 'latin1')
}

interface Outcome {
  bytes: Buffer
  closed: boolean
  /**
   * A later piece could not be written because the peer had already closed. Node then destroys
   * the socket without reading what the kernel still holds (the peer's error reply among it),
   * so the bytes seen are not what the peer sent: the run says nothing and is made again.
   */
  writeFailed: boolean
}

/**
 * Sends `input` on a fresh connection in the given pieces, then collects what comes back. When
 * `expect` is given (Redis's outcome), waits for that many bytes or the close first, so a slow
 * proxy is never mistaken for a silent one; then a quiet period catches anything extra.
 */
async function run (port: number, pieces: Buffer[], expect: Outcome | null): Promise<Outcome> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  const chunks: Buffer[] = []
  let length = 0
  let closed = false
  let writeFailed = false
  let wake: (() => void) | null = null
  socket.on('data', (d: Buffer) => { chunks.push(d); length += d.length; wake?.() })
  socket.on('close', () => { closed = true; wake?.() })
  socket.on('error', () => {})
  await new Promise<void>((resolve) => socket.once('connect', () => { resolve() }))
  for (const piece of pieces) {
    if (closed) break
    socket.write(piece, (err) => { if (err != null) writeFailed = true })
    await new Promise((resolve) => setImmediate(resolve))
  }
  const until = async (cond: () => boolean, ms: number): Promise<void> => {
    const deadline = Date.now() + ms
    while (!cond() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()))
        wake = () => { clearTimeout(t); resolve() }
      })
      wake = null
    }
  }
  if (expect !== null) await until(() => closed || length >= expect.bytes.length, 5000)
  if (expect === null || !expect.closed) {
    // Quiet: nothing more within 150 ms (Redis is waiting for the rest of a frame). Direct
    // Redis that has said nothing at all gets a second, longer look, so a slow answer on a
    // loaded machine is not mistaken for silence.
    const quiet = async (ms: number): Promise<void> => {
      let last = -1
      while (!closed && last !== length) {
        last = length
        await until(() => closed || length !== last, ms)
      }
    }
    await quiet(150)
    if (expect === null && length === 0 && !closed) await quiet(400)
  } else {
    await until(() => closed, 5000)
  }
  socket.destroy()
  return { bytes: Buffer.concat(chunks), closed, writeFailed }
}

/**
 * `run`, made again while a write failed (see `Outcome.writeFailed`); after three such runs the
 * input goes as one write, which reaches the peer before it can close.
 */
async function settledRun (port: number, pieces: Buffer[], expect: Outcome | null): Promise<{ outcome: Outcome, pieces: Buffer[] }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const outcome = await run(port, pieces, expect)
    if (!outcome.writeFailed) return { outcome, pieces }
  }
  const whole = [Buffer.concat(pieces)]
  return { outcome: await run(port, whole, expect), pieces: whole }
}

function show (b: Buffer): string {
  return JSON.stringify(b.toString('latin1'))
}

test('differential framing: respool accepts exactly the frames Redis accepts, and a refused frame costs only its sender', { timeout: 180000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  // Pool of 2: one shared lane that every bystander and every fuzz frame share.
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await proxy.destroy() })
  const bystanders = await startBystanders(proxy.address.port, 3, 'fzd-by')
  after(() => { bystanders.stop() })

  const rnd = prng(SEED)
  t.diagnostic(`seed ${SEED} (RESPOOL_FRAMING_SEED), ${CASES} cases`)
  const inputs: Buffer[][] = []
  for (let i = 0; i < CASES; i++) {
    const frame = mutate(TEMPLATES[Math.floor(rnd() * TEMPLATES.length)], rnd)
    // Random write boundaries: Redis and respool must not care where the pieces fall.
    const cuts = [0]
    for (let c = Math.floor(rnd() * 3); c > 0; c--) cuts.push(Math.floor(rnd() * frame.length))
    cuts.push(frame.length)
    cuts.sort((a, b) => a - b)
    const pieces = cuts.slice(1).map((end, k) => frame.subarray(cuts[k], end)).filter((p) => p.length > 0)
    inputs.push(pieces.length > 0 ? pieces : [frame])
  }
  let closedCases = 0
  let joined = 0
  const BATCH = 16
  for (let i = 0; i < inputs.length; i += BATCH) {
    const batch = inputs.slice(i, i + BATCH)
    await Promise.all(batch.map(async (pieces, k) => {
      const { outcome: direct, pieces: sent } = await settledRun(redis.port, pieces, null)
      const { outcome: proxied, pieces: sentToProxy } = await settledRun(proxy.address.port, sent, direct)
      if (sentToProxy.length !== pieces.length) joined++
      assert.ok(!direct.writeFailed && !proxied.writeFailed, `case ${i + k}: even one write failed`)
      const input = show(Buffer.concat(pieces))
      assert.equal(proxied.bytes.toString('latin1'), direct.bytes.toString('latin1'),
        `case ${i + k} (seed ${SEED}): input ${input}: direct ${show(direct.bytes)}, respool ${show(proxied.bytes)}`)
      assert.equal(proxied.closed, direct.closed, `case ${i + k} (seed ${SEED}): input ${input}: closed by Redis ${direct.closed}, by respool ${proxied.closed}`)
      if (direct.closed) closedCases++
    }))
    bystanders.check()
  }
  await bystanders.settle()
  t.diagnostic(`${closedCases} of ${CASES} inputs made Redis close the connection; bystanders completed ${bystanders.completed} commands, none failed; ${joined} inputs went as one write after their pieces kept meeting a closed peer`)
  assert.ok(closedCases > CASES / 10, 'the fuzzer produced protocol errors')
  assert.ok(closedCases < CASES, 'the fuzzer produced accepted frames too')
})

test('after a protocol error the sender is closed, as by Redis, even while it keeps writing', { timeout: 30000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await proxy.destroy() })
  for (const start of ['\x00', '*\x00', '$\x00', '*1\r\n$x\r\n']) {
    const outcomes: string[] = []
    for (const port of [redis.port, proxy.address.port]) {
      // allowHalfOpen: a FIN alone does not end this client (as it does not end a C client that
      // keeps writing); only a connection the peer really closed does.
      const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
      socket.on('error', () => {})
      await new Promise<void>((resolve) => socket.once('connect', () => { resolve() }))
      let received = ''
      socket.on('data', (d: Buffer) => { received += d.toString('latin1') })
      const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve() }))
      socket.write(start)
      // Keep writing bytes with no line end, as a confused client would, until the peer closes.
      const filler = Buffer.alloc(16 * 1024, 0x78)
      const timer = setInterval(() => { if (!socket.destroyed) socket.write(filler) }, 5)
      const started = Date.now()
      const outcome = await Promise.race([closed.then(() => 'closed'), new Promise<string>((resolve) => setTimeout(() => { resolve('still open after 10 s') }, 10000))])
      clearInterval(timer)
      socket.destroy()
      outcomes.push(`${outcome}: ${JSON.stringify(received)}`)
      t.diagnostic(`${JSON.stringify(start)} on port ${port}: ${outcome} after ${Date.now() - started} ms`)
    }
    assert.equal(outcomes[1], outcomes[0], `input ${JSON.stringify(start)}: direct first, respool second`)
  }
})

test('a protocol error in the middle of a large command that is already streaming upstream costs only its sender', { timeout: 30000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await proxy.destroy() })
  const release = await holdPin(proxy) // one shared lane for both clients
  after(release)
  const other = await RawClient.connect(proxy.address.port)
  after(() => { other.close() })
  const otherFrames = new FrameReader(other)
  other.write(cmd('PING'))
  assert.equal(await otherFrames.next(), '+PONG\r\n')
  const sender = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  sender.on('error', () => {})
  await new Promise<void>((resolve) => sender.once('connect', () => { resolve() }))
  let got = ''
  sender.on('data', (d: Buffer) => { got += d.toString('latin1') })
  const closed = new Promise<void>((resolve) => sender.once('close', () => { resolve() }))
  // A 2 MB value streams upstream as it arrives; then a header Redis refuses.
  sender.write(Buffer.concat([Buffer.from('*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n'), Buffer.alloc(2000000, 0x78), Buffer.from('\r\n$01\r\nx\r\n')]))
  await closed
  assert.equal(got, '-ERR Protocol error: invalid bulk length\r\n')
  const started = Date.now()
  other.write(cmd('PING'))
  assert.equal(await otherFrames.next(5000), '+PONG\r\n')
  t.diagnostic(`the other client on the lane was answered ${Date.now() - started} ms later`)
  assert.ok(Date.now() - started < 2000, 'not held up until the command timeout')
})
