/**
 * Streams one large value through a server with a raw socket: `SET key <size bytes>` written in
 * 64 KB chunks with backpressure, then `GET key` whose reply is counted as it arrives and never
 * held whole. Meanwhile the server's RSS is sampled, so the caller can see how much memory the
 * value cost the proxy on its way through.
 */
import net from 'node:net'
import { once } from 'node:events'
import { memoryKiB } from './harness.js'

const CHUNK = 64 * 1024

export interface BigValueResult {
  size: number
  baselineRssKiB: number
  setPeakRssKiB: number
  getPeakRssKiB: number
  /** VmHWM at the end (the kernel's own peak, catches spikes between samples). */
  hwmKiB: number
  setMs: number
  getMs: number
  setReply: string
  getBytes: number
  getOk: boolean
  error?: string
  afterRssKiB: number
}

export async function bigValueRoundTrip (port: number, pid: number, size: number, key: string, timeoutMs: number, steps = { set: true, get: true }): Promise<BigValueResult> {
  const base = memoryKiB(pid)
  const res: BigValueResult = {
    size,
    baselineRssKiB: base?.rss ?? NaN,
    setPeakRssKiB: 0,
    getPeakRssKiB: 0,
    hwmKiB: NaN,
    setMs: NaN,
    getMs: NaN,
    setReply: '',
    getBytes: 0,
    getOk: false,
    afterRssKiB: NaN
  }
  let phase: 'set' | 'get' = 'set'
  const sample = (): void => {
    const m = memoryKiB(pid)
    if (m === null) return
    if (phase === 'set') res.setPeakRssKiB = Math.max(res.setPeakRssKiB, m.rss)
    else res.getPeakRssKiB = Math.max(res.getPeakRssKiB, m.rss)
  }
  const sampler = setInterval(sample, 10)
  const socket = net.connect({ host: '127.0.0.1', port })
  socket.setNoDelay(true)
  const deadline = setTimeout(() => { socket.destroy(new Error(`timed out after ${timeoutMs} ms`)) }, timeoutMs)
  try {
    await once(socket, 'connect')
    const filler = Buffer.alloc(CHUNK, 0x61)

    // SET: header, then the payload chunk by chunk, then the CRLF.
    let t = performance.now()
    if (steps.set) {
      const reply = readLine(socket)
      socket.write(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${size}\r\n`)
      for (let left = size; left > 0; left -= CHUNK) {
        if (!socket.write(left >= CHUNK ? filler : filler.subarray(0, left))) await once(socket, 'drain')
      }
      socket.write('\r\n')
      res.setReply = (await reply).trim()
      res.setMs = performance.now() - t
      sample()
    } else {
      res.setReply = '(not run)'
      res.setPeakRssKiB = res.baselineRssKiB
    }
    if (!steps.get) return res

    // GET: count the reply's bytes as they arrive.
    phase = 'get'
    t = performance.now()
    const got = countReply(socket, size)
    socket.write(`*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`)
    const r = await got
    res.getMs = performance.now() - t
    res.getBytes = r.payloadBytes
    res.getOk = r.ok
    if (r.error !== undefined) res.error = r.error
    sample()
  } catch (err) {
    res.error = (err as Error).message
  } finally {
    clearTimeout(deadline)
    clearInterval(sampler)
    socket.destroy()
  }
  const end = memoryKiB(pid)
  res.hwmKiB = end?.hwm ?? NaN
  res.afterRssKiB = end?.rss ?? NaN
  return res
}

function readLine (socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    const onData = (d: Buffer): void => {
      text += d.toString('latin1')
      if (text.includes('\r\n')) {
        cleanup()
        resolve(text)
      }
    }
    const onClose = (): void => { cleanup(); reject(new Error(`connection closed before a reply (got ${JSON.stringify(text.slice(0, 100))})`)) }
    const onError = (err: Error): void => { cleanup(); reject(err) }
    const cleanup = (): void => {
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.off('error', onError)
    }
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.on('error', onError)
  })
}

/** Reads one bulk reply of `size` bytes without keeping it: only the header is parsed. */
function countReply (socket: net.Socket, size: number): Promise<{ ok: boolean, payloadBytes: number, error?: string }> {
  return new Promise((resolve) => {
    let header = ''
    let headerDone = false
    let received = 0
    let expected = 0
    const finish = (r: { ok: boolean, payloadBytes: number, error?: string }): void => {
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.off('error', onError)
      resolve(r)
    }
    const onData = (d: Buffer): void => {
      let chunk = d
      if (!headerDone) {
        const nl = chunk.indexOf(10)
        if (nl === -1) {
          header += chunk.toString('latin1')
          return
        }
        header += chunk.toString('latin1', 0, nl + 1)
        chunk = chunk.subarray(nl + 1)
        headerDone = true
        if (!header.startsWith('$')) {
          finish({ ok: false, payloadBytes: 0, error: `GET reply: ${header.trim().slice(0, 200)}` })
          return
        }
        expected = Number(header.slice(1).trim()) + 2
      }
      received += chunk.length
      if (received >= expected) finish({ ok: expected - 2 === size && received === expected, payloadBytes: received - 2 })
    }
    const onClose = (): void => { finish({ ok: false, payloadBytes: Math.max(0, received - 2), error: `connection closed after ${received} of ${expected} reply bytes` }) }
    const onError = (err: Error): void => { finish({ ok: false, payloadBytes: Math.max(0, received - 2), error: err.message }) }
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.on('error', onError)
  })
}
