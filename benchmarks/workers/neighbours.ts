/**
 * Child process for the neighbour-latency scenario (n): the noisy neighbours, on raw sockets.
 *
 *   node neighbours.js '{"port":6380,"mode":"big","clients":1,"pipeline":2,"key":"bench:nb:big","size":67108864}'
 *
 * Modes:
 * - big:   each client sends `pipeline` GETs of `key` in one write, reads every reply at full
 *          speed (counted, never held), and starts again;
 * - stuck: each client sends `pipeline` GETs of `key` in one write and never reads;
 * - slow:  as stuck, but each client reads at `rate` bytes/s (reads of at most 4 KB, paused
 *          whenever it is ahead of that rate).
 *
 * Prints `READY` once every client is connected and has written its commands, and
 * `DONE {json}` (bytes read, replies completed, errors, connections the server closed) when stdin
 * receives "stop" or closes; then exits. Stops itself after `maxSeconds`.
 */
import net from 'node:net'

interface Config {
  port: number
  mode: 'big' | 'stuck' | 'slow'
  clients: number
  pipeline: number
  key: string
  /** Size of the value under key (for counting whole replies). */
  size: number
  /** slow: bytes per second per client. */
  rate?: number
  maxSeconds?: number
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config
const started = performance.now()
const errors: Record<string, number> = {}
const sockets: net.Socket[] = []
let bytesRead = 0
let replies = 0
let closedByServer = 0
let stopping = false

function countError (what: string): void {
  errors[what] = (errors[what] ?? 0) + 1
}

function getCommands (n: number): Buffer {
  const one = `*2\r\n$3\r\nGET\r\n$${Buffer.byteLength(cfg.key)}\r\n${cfg.key}\r\n`
  return Buffer.from(one.repeat(n), 'latin1')
}

/** Counts bulk replies in a stream without keeping them: only headers are parsed. */
class ReplyCounter {
  #header = ''
  #left = 0 // payload + CRLF bytes still to skip
  feed (chunk: Buffer): number {
    let done = 0
    let i = 0
    while (i < chunk.length) {
      if (this.#left > 0) {
        const take = Math.min(this.#left, chunk.length - i)
        this.#left -= take
        i += take
        if (this.#left === 0) done++
        continue
      }
      const nl = chunk.indexOf(10, i)
      if (nl === -1) {
        this.#header += chunk.toString('latin1', i)
        break
      }
      this.#header += chunk.toString('latin1', i, nl + 1)
      i = nl + 1
      const h = this.#header
      this.#header = ''
      if (h[0] === '$') {
        const len = Number(h.slice(1).trim())
        if (len < 0) done++
        else this.#left = len + 2
      } else {
        if (h[0] === '-') countError(`error reply: ${h.trim().slice(0, 120)}`)
        done++
      }
    }
    return done
  }
}

function connect (): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: cfg.port })
    s.setNoDelay(true)
    s.once('connect', () => { resolve(s) })
    s.once('error', reject)
  })
}

function watchClose (s: net.Socket): void {
  s.on('error', (err: Error & { code?: string }) => { if (!stopping) countError(err.code ?? err.message.slice(0, 80)) })
  s.on('close', () => { if (!stopping) closedByServer++ })
}

async function big (s: net.Socket): Promise<void> {
  const counter = new ReplyCounter()
  let pending = 0
  const send = (): void => {
    if (stopping) return
    pending = cfg.pipeline
    s.write(getCommands(cfg.pipeline))
  }
  s.on('data', (d: Buffer) => {
    bytesRead += d.length
    const n = counter.feed(d)
    replies += n
    pending -= n
    if (pending <= 0) send()
  })
  watchClose(s)
  send()
}

async function stuck (s: net.Socket): Promise<void> {
  s.pause()
  watchClose(s)
  await new Promise<void>((resolve) => { s.write(getCommands(cfg.pipeline), () => { resolve() }) })
}

async function slow (s: net.Socket): Promise<void> {
  // A socket with a small read buffer (onread) would be neater, but only sockets passed the
  // option at creation get one; pausing a plain socket once it is ahead keeps to the rate well
  // enough at 100 KB/s (Node reads at most 64 KB at a time).
  const rate = cfg.rate ?? 100 * 1024
  const counter = new ReplyCounter()
  let mine = 0
  const t0 = performance.now()
  s.on('data', (d: Buffer) => {
    bytesRead += d.length
    mine += d.length
    replies += counter.feed(d)
    const ahead = mine - rate * (performance.now() - t0) / 1000
    if (ahead > 0 && !stopping) {
      s.pause()
      setTimeout(() => { if (!stopping) s.resume() }, Math.ceil(ahead / rate * 1000))
    }
  })
  watchClose(s)
  s.pause()
  await new Promise<void>((resolve) => { s.write(getCommands(cfg.pipeline), () => { resolve() }) })
  s.resume()
}

function finish (): void {
  if (stopping) return
  stopping = true
  const out = { mode: cfg.mode, clients: sockets.length, bytesRead, replies, closedByServer, errors, seconds: (performance.now() - started) / 1000 }
  process.stdout.write(`DONE ${JSON.stringify(out)}\n`, () => {
    for (const s of sockets) s.destroy()
    process.exit(0)
  })
}

async function main (): Promise<void> {
  process.stdin.on('data', (d: Buffer) => { if (d.toString().includes('stop')) finish() })
  process.stdin.on('end', finish)
  process.on('SIGTERM', finish)
  setTimeout(finish, (cfg.maxSeconds ?? 120) * 1000).unref()
  for (let i = 0; i < cfg.clients; i++) {
    try {
      sockets.push(await connect())
    } catch (err) {
      countError(`connect: ${(err as Error).message.slice(0, 80)}`)
    }
  }
  const run = cfg.mode === 'big' ? big : cfg.mode === 'stuck' ? stuck : slow
  await Promise.all(sockets.map(run))
  process.stdout.write('READY\n')
}

main().catch((err: Error) => {
  process.stdout.write(`FAILED ${err.message}\n`)
  process.exit(1)
})
