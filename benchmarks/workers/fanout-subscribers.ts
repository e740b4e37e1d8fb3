/**
 * Child process for the pub/sub fan-out benchmark: opens raw TCP connections to 127.0.0.1:PORT
 * for subscribers `first` … `first + count − 1` of the plan (lib/fanout-plan.ts), sends each its
 * SUBSCRIBE or PSUBSCRIBE as soon as it is connected, and checks every message each one gets.
 * Raw sockets and hand-written RESP keep 10,000 subscribers cheap.
 *
 *   node fanout-subscribers.js '{"port":6380,"first":0,"count":10000,"plan":{…},"graceMs":5000}'
 *
 * Protocol with the parent (one line each):
 *   stdout  READY {…}     once every connection is open (or failed) and confirmed (or not within
 *                         `subscribeTimeoutMs`): indices that failed, confirmation times, errors;
 *   stdin   EXPECT {"total":T}   T messages were published (g = 0 … T−1);
 *   stdout  RESULT {…}    once every subscriber has every message it must get, or `graceMs` after
 *                         EXPECT: deliveries, a latency histogram, and what was lost, duplicated,
 *                         out of order or wrong;
 *   stdin   QUIT          (or stdin closing): reset every connection and exit.
 *
 * Delivery latency = the time the subscriber read the message − the send time in its payload.
 * Both are process.hrtime in µs (CLOCK_MONOTONIC, the same clock in every process on the
 * machine). The process gives up on its own after 10 minutes.
 */
import net from 'node:net'
import { channelName, channelOfMessage, covers, expectedMessages, patternName, subscriptionOf, type FanoutPlan } from '../lib/fanout-plan.js'

interface Config {
  port: number
  first: number
  count: number
  plan: FanoutPlan
  /** After EXPECT, how long to wait for messages still missing. */
  graceMs?: number
  subscribeTimeoutMs?: number
  /** Connections being opened at once. */
  concurrency?: number
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config
const plan = cfg.plan
const CONCURRENCY = cfg.concurrency ?? 200
const GRACE_MS = cfg.graceMs ?? 5000
const SUBSCRIBE_TIMEOUT_MS = cfg.subscribeTimeoutMs ?? 60000

const hardStop = setTimeout(() => {
  process.stdout.write('FAILED fan-out subscribers did not finish in time\n')
  process.exit(2)
}, 600_000)
hardStop.unref()

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

const CR = 13

/** One subscriber's connection and what it has received. */
class Sub {
  readonly pattern: boolean
  readonly index: number
  readonly topic: string
  socket: net.Socket | null = null
  confirmedUs = 0
  closed = false
  rest: Buffer | null = null
  /** Bit g: message g arrived. */
  seen = new Uint8Array(128)
  lastG = -1
  received = 0
  distinct = 0
  duplicates = 0
  outOfOrder = 0
  wrong = 0
  expected = -1

  constructor (readonly i: number) {
    const s = subscriptionOf(plan, i)
    this.pattern = s.pattern
    this.index = s.index
    this.topic = s.pattern ? patternName(plan, s.index) : channelName(plan, s.index)
  }

  mark (g: number): boolean {
    const byte = g >> 3
    if (byte >= this.seen.length) {
      const grown = new Uint8Array(Math.max(byte + 1, this.seen.length * 2))
      grown.set(this.seen)
      this.seen = grown
    }
    const bit = 1 << (g & 7)
    if ((this.seen[byte] & bit) !== 0) return false
    this.seen[byte] |= bit
    return true
  }

  done (): boolean {
    return this.expected >= 0 && this.distinct >= this.expected
  }
}

const subs: Sub[] = []
for (let k = 0; k < cfg.count; k++) subs.push(new Sub(cfg.first + k))
const failed: number[] = []
const errors: Record<string, number> = {}
const errorSamples: string[] = []
const badConfirmations: string[] = []
let confirmed = 0
let deliveries = 0
let firstDeliveryUs = 0
let lastDeliveryUs = 0
let maxLatencyUs = 0
/** Latency histogram: µs below 1,000 exactly, above that to three significant digits. */
const hist = new Map<number, number>()
let complete = 0
let resultSent = false
let readyCallback: (() => void) | null = null

function countError (key: string, sample?: string): void {
  errors[key] = (errors[key] ?? 0) + 1
  if (sample !== undefined && errorSamples.length < 8) errorSamples.push(sample.slice(0, 300))
}

function bucket (us: number): number {
  if (us < 1000) return us < 0 ? 0 : Math.round(us)
  const scale = 10 ** (Math.floor(Math.log10(us)) - 2)
  return Math.round(us / scale) * scale
}

/** Parses one flat frame (array of bulk strings/integers, or an error) at `pos`; null if incomplete. */
function parseFrame (buf: Buffer, pos: number): { end: number, items: Array<string | number | null>, error: string | null } | null {
  let eol = buf.indexOf(CR, pos)
  if (eol === -1 || eol + 1 >= buf.length) return null
  const type = buf[pos]
  if (type === 0x2d || type === 0x2b) return { end: eol + 2, items: [], error: buf.toString('latin1', pos, eol) } // '-' or '+'
  if (type === 0x3a) return { end: eol + 2, items: [Number(buf.toString('latin1', pos + 1, eol))], error: null }
  if (type !== 0x2a && type !== 0x3e) return { end: buf.length, items: [], error: `unexpected frame ${buf.toString('latin1', pos, Math.min(eol, pos + 40))}` }
  const n = Number(buf.toString('latin1', pos + 1, eol))
  let at = eol + 2
  const items: Array<string | number | null> = []
  for (let k = 0; k < n; k++) {
    if (at >= buf.length) return null
    eol = buf.indexOf(CR, at)
    if (eol === -1 || eol + 1 >= buf.length) return null
    const t = buf[at]
    if (t === 0x3a) {
      items.push(Number(buf.toString('latin1', at + 1, eol)))
      at = eol + 2
    } else if (t === 0x24) {
      const len = Number(buf.toString('latin1', at + 1, eol))
      if (len < 0) {
        items.push(null)
        at = eol + 2
        continue
      }
      if (buf.length < eol + 2 + len + 2) return null
      items.push(buf.toString('latin1', eol + 2, eol + 2 + len))
      at = eol + 2 + len + 2
    } else {
      return { end: buf.length, items: [], error: `unexpected element ${buf.toString('latin1', at, Math.min(eol, at + 40))}` }
    }
  }
  return { end: at, items, error: null }
}

function onFrame (sub: Sub, items: Array<string | number | null>, error: string | null, atUs: number): void {
  if (error !== null) {
    countError(error.slice(0, 80), `subscriber ${sub.i}: ${error}`)
    return
  }
  const kind = items[0]
  if (kind === 'subscribe' || kind === 'psubscribe') {
    const want = sub.pattern ? 'psubscribe' : 'subscribe'
    if (kind !== want || items[1] !== sub.topic || items[2] !== 1) {
      if (badConfirmations.length < 8) badConfirmations.push(`subscriber ${sub.i} (${want} ${sub.topic}) got ${JSON.stringify(items)}`)
      countError('wrong confirmation')
    }
    if (sub.confirmedUs === 0) {
      sub.confirmedUs = atUs
      confirmed++
      if (confirmed + failed.length >= subs.length) readyCallback?.()
    }
    return
  }
  let channel: string | null
  let payload: string | null
  if (kind === 'message' && items.length === 3) {
    channel = items[1] as string | null
    payload = items[2] as string | null
    if (sub.pattern || channel !== sub.topic) return wrongMessage(sub, items)
  } else if (kind === 'pmessage' && items.length === 4) {
    if (!sub.pattern || items[1] !== sub.topic) return wrongMessage(sub, items)
    channel = items[2] as string | null
    payload = items[3] as string | null
  } else {
    return wrongMessage(sub, items)
  }
  const colon = payload?.indexOf(':') ?? -1
  if (payload === null || channel === null || colon === -1) return wrongMessage(sub, items)
  const g = Number(payload.slice(0, colon))
  const sentUs = Number(payload.slice(colon + 1))
  const c = channelOfMessage(plan, g)
  if (!Number.isInteger(g) || g < 0 || channelName(plan, c) !== channel || !covers(sub, c)) return wrongMessage(sub, items)
  sub.received++
  deliveries++
  if (firstDeliveryUs === 0) firstDeliveryUs = atUs
  lastDeliveryUs = atUs
  const lat = atUs - sentUs
  if (lat > maxLatencyUs) maxLatencyUs = lat
  const b = bucket(lat)
  hist.set(b, (hist.get(b) ?? 0) + 1)
  if (!sub.mark(g)) {
    sub.duplicates++
    return
  }
  sub.distinct++
  if (g < sub.lastG) sub.outOfOrder++
  else sub.lastG = g
  if (sub.expected >= 0 && sub.distinct === sub.expected) {
    complete++
    if (complete === subs.length) sendResult()
  }
}

function wrongMessage (sub: Sub, items: Array<string | number | null>): void {
  sub.wrong++
  countError('wrong message', `subscriber ${sub.i} (${sub.pattern ? 'pattern' : 'channel'} ${sub.topic}) got ${JSON.stringify(items).slice(0, 200)}`)
}

function openOne (sub: Sub): Promise<void> {
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
      if (!settled) {
        failed.push(sub.i)
        if (confirmed + failed.length >= subs.length) readyCallback?.()
      }
      countError(err.code ?? err.message.slice(0, 80))
      finish()
    })
    socket.on('close', () => {
      if (sub.socket === socket && !resultSent) {
        sub.closed = true
        countError('connection closed by the server', `subscriber ${sub.i} (${sub.topic}): connection closed`)
      }
      finish()
    })
    socket.once('connect', () => {
      sub.socket = socket
      const cmd = sub.pattern ? 'PSUBSCRIBE' : 'SUBSCRIBE'
      socket.write(`*2\r\n$${cmd.length}\r\n${cmd}\r\n$${sub.topic.length}\r\n${sub.topic}\r\n`)
      finish()
    })
    socket.on('data', (d: Buffer) => {
      const atUs = nowUs()
      const buf = sub.rest === null ? d : Buffer.concat([sub.rest, d])
      let pos = 0
      while (pos < buf.length) {
        const f = parseFrame(buf, pos)
        if (f === null) break
        onFrame(sub, f.items, f.error, atUs)
        pos = f.end
      }
      sub.rest = pos >= buf.length ? null : buf.subarray(pos)
    })
  })
}

function sendResult (): void {
  if (resultSent) return
  resultSent = true
  let lost = 0
  let duplicates = 0
  let outOfOrder = 0
  let wrong = 0
  let closed = 0
  let subsLost = 0
  let subsDup = 0
  let subsDisorder = 0
  let subsWrong = 0
  let expectedDeliveries = 0
  const lossSamples: string[] = []
  for (const s of subs) {
    if (s.socket === null) continue
    const missing = Math.max(0, s.expected - s.distinct)
    expectedDeliveries += Math.max(0, s.expected)
    lost += missing
    duplicates += s.duplicates
    outOfOrder += s.outOfOrder
    wrong += s.wrong
    if (s.closed) closed++
    if (missing > 0) {
      subsLost++
      if (lossSamples.length < 8) lossSamples.push(`subscriber ${s.i} (${s.topic}): ${s.distinct}/${s.expected}${s.closed ? ', connection closed' : ''}`)
    }
    if (s.duplicates > 0) subsDup++
    if (s.outOfOrder > 0) subsDisorder++
    if (s.wrong > 0) subsWrong++
  }
  process.stdout.write(`RESULT ${JSON.stringify({
    deliveries, expectedDeliveries, lost, duplicates, outOfOrder, wrong, closed, subsLost, subsDup, subsDisorder, subsWrong,
    firstDeliveryUs, lastDeliveryUs, maxLatencyUs, hist: [...hist.entries()], errors, errorSamples, lossSamples, badConfirmations
  })}\n`)
}

function onLine (line: string): void {
  if (line.startsWith('EXPECT ')) {
    const { total } = JSON.parse(line.slice(7)) as { total: number }
    complete = 0
    for (const s of subs) {
      s.expected = s.socket === null ? 0 : expectedMessages(plan, s, total)
      if (s.done()) complete++
    }
    setTimeout(sendResult, GRACE_MS)
    if (complete === subs.length) sendResult()
  } else if (line === 'QUIT') {
    shutdown()
  }
}

function shutdown (): void {
  // A reset, not a FIN: 10,000 sockets per run would otherwise sit in TIME_WAIT on the loopback
  // ports the next runs need.
  for (const s of subs) if (s.socket !== null && !s.socket.destroyed) s.socket.resetAndDestroy()
  process.exit(0)
}

async function main (): Promise<void> {
  const startUs = nowUs()
  const allConfirmed = new Promise<void>((resolve) => { readyCallback = resolve })
  let next = 0
  const lanes: Array<Promise<void>> = []
  for (let c = 0; c < CONCURRENCY; c++) {
    lanes.push((async () => {
      while (next < subs.length) await openOne(subs[next++])
    })())
  }
  await Promise.all(lanes)
  const connectedUs = nowUs()
  if (confirmed + failed.length < subs.length) {
    await Promise.race([allConfirmed, new Promise((resolve) => setTimeout(resolve, SUBSCRIBE_TIMEOUT_MS))])
  }
  let lastConfirmedUs = 0
  const unconfirmed: number[] = []
  for (const s of subs) {
    if (s.confirmedUs > lastConfirmedUs) lastConfirmedUs = s.confirmedUs
    if (s.socket !== null && s.confirmedUs === 0) unconfirmed.push(s.i)
  }
  process.stdout.write(`READY ${JSON.stringify({
    connected: subs.length - failed.length, failed, confirmed, unconfirmed: unconfirmed.slice(0, 100), unconfirmedCount: unconfirmed.length,
    errors, errorSamples, badConfirmations, startUs, connectedUs, lastConfirmedUs, deliveriesBefore: deliveries
  })}\n`)
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
