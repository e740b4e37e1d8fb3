import net from 'node:net'
import { cmd } from './raw-client.js'

/**
 * Clients that pipeline commands with exactly predictable replies for as long as a test runs,
 * and check every reply byte for byte: INCR on a counter of their own (the exact next number)
 * and GET of a value they set. Anything else (an error from a lane closed under them, a reply
 * meant for someone else, a stale value) is recorded as a failure.
 */
export interface Bystanders {
  /** Commands answered correctly so far. */
  readonly completed: number
  /** Throws the first failure seen, if any. */
  check (): void
  /** Waits until every bystander has completed another round, then checks. */
  settle (): Promise<void>
  stop (): void
}

const ROUND = 16

export async function startBystanders (port: number, count: number, prefix: string, database = 0): Promise<Bystanders> {
  let completed = 0
  let failure: Error | null = null
  let stopped = false
  const rounds: number[] = new Array(count).fill(0)
  const sockets: net.Socket[] = []

  const one = async (index: number): Promise<void> => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    sockets.push(socket)
    socket.on('error', () => {})
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    const counter = `${prefix}:${index}:n`
    const valueKey = `${prefix}:${index}:v`
    let buffered = Buffer.alloc(0)
    let wake: (() => void) | null = null
    let closed = false
    socket.on('data', (d: Buffer) => { buffered = Buffer.concat([buffered, d]); wake?.() })
    socket.on('close', () => { closed = true; wake?.() })
    const read = async (want: Buffer): Promise<void> => {
      const deadline = Date.now() + 10000
      while (buffered.length < want.length && !closed && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 100)
          wake = () => { clearTimeout(t); resolve() }
        })
        wake = null
      }
      const got = buffered.subarray(0, want.length)
      buffered = buffered.subarray(got.length)
      if (!got.equals(want)) {
        throw new Error(`bystander ${prefix}:${index} expected ${JSON.stringify(want.toString('latin1'))}, got ${JSON.stringify(got.toString('latin1'))}${closed ? ' (connection closed)' : ''}`)
      }
    }
    const setup = Buffer.concat([cmd('SELECT', String(database)), cmd('DEL', counter), cmd('SET', valueKey, `v${index}`)])
    socket.write(setup)
    // DEL answers 0 or 1: the three replies are read by shape.
    const first = await readLine()
    async function readLine (): Promise<string> {
      const deadline = Date.now() + 10000
      while (!buffered.includes('\r\n') && !closed && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 100)
          wake = () => { clearTimeout(t); resolve() }
        })
        wake = null
      }
      const end = buffered.indexOf('\r\n')
      if (end === -1) throw new Error(`bystander ${prefix}:${index}: no reply${closed ? ' (connection closed)' : ''}`)
      const line = buffered.toString('latin1', 0, end)
      buffered = buffered.subarray(end + 2)
      return line
    }
    const second = await readLine()
    const third = await readLine()
    if (first !== '+OK' || !/^:[01]$/.test(second) || third !== '+OK') throw new Error(`bystander ${prefix}:${index} setup failed: ${first} ${second} ${third}`)
    let n = 0
    while (!stopped) {
      const parts: Buffer[] = []
      const expect: Buffer[] = []
      for (let i = 0; i < ROUND; i++) {
        if (i % 4 === 3) {
          parts.push(cmd('GET', valueKey))
          const v = `v${index}`
          expect.push(Buffer.from(`$${v.length}\r\n${v}\r\n`))
        } else {
          parts.push(cmd('INCR', counter))
          expect.push(Buffer.from(`:${++n}\r\n`))
        }
      }
      socket.write(Buffer.concat(parts))
      await read(Buffer.concat(expect))
      completed += ROUND
      rounds[index]++
    }
    socket.destroy()
  }

  const running = Array.from({ length: count }, async (_, i) => {
    try {
      await one(i)
    } catch (err) {
      failure ??= err as Error
    }
  })
  void Promise.all(running)

  return {
    get completed () { return completed },
    check () {
      if (failure !== null) throw failure
    },
    async settle () {
      const target = rounds.map((r) => r + 1)
      const deadline = Date.now() + 10000
      while (failure === null && rounds.some((r, i) => r < target[i]) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      if (failure !== null) throw failure
      if (rounds.some((r, i) => r < target[i])) throw new Error(`bystanders ${prefix} made no progress in 10 s`)
    },
    stop () {
      stopped = true
      for (const s of sockets) s.destroy()
    }
  }
}
