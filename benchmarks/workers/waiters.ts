/**
 * Child process for the waiters scenario: opens `count` raw TCP connections to 127.0.0.1:PORT and,
 * once all are open, sends one `BLPOP <prefix><i> <timeout>` on each, all in one go; then records
 * when each reply arrives and what it was. Raw sockets and hand-written RESP keep 10,000 clients cheap.
 *
 *   node waiters.js '{"port":6380,"count":10000,"prefix":"bench:sem:","timeoutSec":10}'
 *
 * Protocol with the parent (one line each):
 *   stdout  SENT {"connected":…,"failed":[indices],"errors":{…},"startUs":…,"connectedUs":…,"firstSentUs":…,"lastSentUs":…}
 *           once every connection is open (or failed) and has been sent its BLPOP;
 *   stdin   EXPECT [indices]   the waiters whose key gets a token;
 *   stdout  RESULT {…}         when every expected waiter has a reply, or when the last BLPOP's
 *                              timeout plus `graceMs` has passed: per waiter, when its BLPOP was
 *                              sent, when its reply came and what it was;
 *   stdin   QUIT               (or stdin closing): reset every connection and exit.
 *
 * Times are process.hrtime in microseconds (CLOCK_MONOTONIC, the same clock in every process on
 * the machine), so the parent can subtract the time it wrote a token from the time its waiter
 * got it. The process gives up on its own after timeoutSec + 120 s.
 */
import net from 'node:net'

interface Config {
  port: number
  count: number
  prefix: string
  timeoutSec: number
  /** Connections being opened at once. */
  concurrency?: number
  /** After the last BLPOP's own timeout, how long to wait for replies still missing. */
  graceMs?: number
}

/** What a waiter got. */
const NONE = 0
const ELEMENT = 1
const NIL = 2
const ERROR = 3
const CLOSED = 4
const WRONG = 5

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config
const CONCURRENCY = cfg.concurrency ?? 200
const GRACE_MS = cfg.graceMs ?? 3000

const hardStop = setTimeout(() => {
  process.stdout.write('FAILED waiters did not finish in time\n')
  process.exit(2)
}, (cfg.timeoutSec + 120) * 1000)
hardStop.unref()

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

const sockets: Array<net.Socket | null> = new Array(cfg.count).fill(null)
const sentUs = new Float64Array(cfg.count)
const replyUs = new Float64Array(cfg.count)
const kind = new Uint8Array(cfg.count)
const errors: Record<string, number> = {}
const errorSamples: string[] = []
const failed: number[] = []
let replies = 0

let expected: Set<number> | null = null
let expectedLeft = 0
let resultSent = false
let deadlineTimer: NodeJS.Timeout | null = null

function countError (key: string): void {
  errors[key] = (errors[key] ?? 0) + 1
}

function encode (args: string[]): Buffer {
  let s = `*${args.length}\r\n`
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return Buffer.from(s, 'latin1')
}

/**
 * One complete reply at the start of buf: its kind, or null if more bytes are needed. A BLPOP
 * reply is `*2 $key $value` (RESP2), `*-1` / `_` (nil), or an error line.
 */
function parseReply (buf: Buffer, i: number): number | null {
  const eol = buf.indexOf('\r\n')
  if (eol === -1) return null
  const head = buf.toString('latin1', 0, eol)
  if (head === '*-1' || head === '_' || head === '$-1') return NIL
  if (head[0] === '-') {
    countError(head.slice(0, 80))
    if (errorSamples.length < 5) errorSamples.push(head.slice(0, 200))
    return ERROR
  }
  if (head !== '*2') {
    countError(`unexpected reply ${head.slice(0, 40)}`)
    return ERROR
  }
  const items: string[] = []
  let at = eol + 2
  for (let k = 0; k < 2; k++) {
    const e = buf.indexOf('\r\n', at)
    if (e === -1) return null
    const len = Number(buf.toString('latin1', at + 1, e))
    if (buf.length < e + 2 + len + 2) return null
    items.push(buf.toString('latin1', e + 2, e + 2 + len))
    at = e + 2 + len + 2
  }
  if (items[0] !== `${cfg.prefix}${i}` || items[1] !== String(i)) {
    countError('element for another waiter')
    if (errorSamples.length < 5) errorSamples.push(`waiter ${i} got ${items[0]} = ${items[1]}`)
    return WRONG
  }
  return ELEMENT
}

function onReply (i: number, k: number): void {
  if (kind[i] !== NONE) return
  kind[i] = k
  replyUs[i] = nowUs()
  replies++
  if (expected?.has(i) === true) {
    expectedLeft--
    if (expectedLeft === 0) sendResult()
  }
}

function openOne (i: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: cfg.port })
    let settled = false
    const finish = (): void => {
      if (!settled) {
        settled = true
        resolve()
      }
    }
    socket.setNoDelay(true)
    socket.on('error', (err: Error & { code?: string }) => {
      if (!settled) failed.push(i)
      countError(err.code ?? err.message.slice(0, 80))
      finish()
    })
    socket.on('close', () => {
      if (sockets[i] === socket && kind[i] === NONE && !resultSent) onReply(i, CLOSED)
      finish()
    })
    socket.once('connect', () => {
      sockets[i] = socket
      finish()
    })
    let buf: Buffer | null = null
    socket.on('data', (d: Buffer) => {
      buf = buf === null ? d : Buffer.concat([buf, d])
      const k = parseReply(buf, i)
      if (k === null) return
      buf = null
      onReply(i, k)
    })
  })
}

function sendResult (): void {
  if (resultSent) return
  resultSent = true
  if (deadlineTimer !== null) clearTimeout(deadlineTimer)
  process.stdout.write(`RESULT ${JSON.stringify({
    sentUs: Array.from(sentUs),
    replyUs: Array.from(replyUs),
    kind: Array.from(kind),
    replies,
    errors,
    errorSamples
  })}\n`)
}

function onLine (line: string): void {
  if (line.startsWith('EXPECT ')) {
    const list = JSON.parse(line.slice(7)) as number[]
    expected = new Set(list)
    expectedLeft = 0
    for (const i of expected) if (kind[i] === NONE) expectedLeft++
    let last = 0
    for (let i = 0; i < cfg.count; i++) if (sentUs[i] > last) last = sentUs[i]
    const waitMs = Math.max(0, (last - nowUs()) / 1000 + cfg.timeoutSec * 1000 + GRACE_MS)
    deadlineTimer = setTimeout(sendResult, waitMs)
    if (expectedLeft === 0) sendResult()
  } else if (line === 'QUIT') {
    shutdown()
  }
}

function shutdown (): void {
  // A reset, not a FIN: 10,000 sockets per run would otherwise sit in TIME_WAIT on the loopback
  // ports the next runs need.
  for (const s of sockets) if (s !== null && !s.destroyed) s.resetAndDestroy()
  process.exit(0)
}

async function main (): Promise<void> {
  const startUs = nowUs()
  let next = 0
  const lanes: Array<Promise<void>> = []
  for (let c = 0; c < CONCURRENCY; c++) {
    lanes.push((async () => {
      while (next < cfg.count) await openOne(next++)
    })())
  }
  await Promise.all(lanes)
  const connectedUs = nowUs()
  // Every BLPOP in one go, once all are connected: the proxy parks N commands that arrive
  // together, and their timeouts all end at about the same time.
  const commands = sockets.map((s, i) => s === null ? null : encode(['BLPOP', `${cfg.prefix}${i}`, String(cfg.timeoutSec)]))
  let first = Infinity
  let last = 0
  for (let i = 0; i < cfg.count; i++) {
    const s = sockets[i]
    const command = commands[i]
    if (s === null || command === null || s.destroyed) continue
    sentUs[i] = nowUs()
    s.write(command)
    if (sentUs[i] < first) first = sentUs[i]
    last = sentUs[i]
  }
  process.stdout.write(`SENT ${JSON.stringify({ connected: cfg.count - failed.length, failed, errors, startUs, connectedUs, firstSentUs: first, lastSentUs: last })}\n`)
}

let pendingInput = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (d: string) => {
  pendingInput += d
  let nl: number
  while ((nl = pendingInput.indexOf('\n')) !== -1) {
    const line = pendingInput.slice(0, nl)
    pendingInput = pendingInput.slice(nl + 1)
    onLine(line.trim())
  }
})
process.stdin.on('end', shutdown)
process.on('SIGTERM', shutdown)
main().catch((err: Error) => {
  process.stdout.write(`FAILED ${err.message}\n`)
  process.exit(1)
})
