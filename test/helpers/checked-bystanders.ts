import { RawClient, cmd } from './raw-client.js'
import { FrameReader } from './resp-frames.js'

/**
 * Clients that pipeline ordinary commands through respool while a test does something unusual
 * next to them, and check every byte they get back: the whole reply stream of each, compared
 * with the bytes Redis gives for those commands, so an error, a reply of somebody else's, a
 * lost, extra or duplicated reply is caught.
 */
export interface CheckedBystanders {
  /** respool's client ids of the bystanders (CLIENT ID), to find their sessions. */
  readonly ids: number[]
  /** Rounds every bystander has completed (the smallest count among them). */
  readonly rounds: number
  /** Mismatches so far (each stops its bystander). */
  readonly failures: string[]
  /** Resolves once every bystander has completed `n` more rounds from now (rejects on a mismatch or after `timeoutMs`). */
  moreRounds (n?: number, timeoutMs?: number): Promise<void>
  /** Stops after the current round, checks that nothing more arrived, closes; returns the mismatches ([] if none). */
  stop (): Promise<string[]>
}

export interface CheckedBystanderOptions {
  count?: number
  /** Prefix of the keys bystanders write (each its own); false: commands that touch no key (the test may flush). */
  keys?: string | false
  /** Protocol the bystanders speak (HELLO 3 first when 3). */
  resp?: 2 | 3
  /** Database the bystanders use (SELECT first when not 0). */
  db?: number
  /** Commands per round. */
  pipeline?: number
  /** Pause between rounds, so bystanders share a loaded machine rather than saturate it. */
  pauseMs?: number
}

interface Step { command: Buffer, reply: string }

function bulk (s: string): string {
  return `$${Buffer.byteLength(s, 'latin1')}\r\n${s}\r\n`
}

/** One round's commands and the exact replies Redis gives them. */
function round (who: number, n: number, keys: string | false, size: number): Step[] {
  const steps: Step[] = []
  for (let i = 0; steps.length < size; i++) {
    const payload = `by${who}:${n}:${i}\r\n\x00\xff`
    steps.push({ command: cmd('ECHO', Buffer.from(payload, 'latin1')), reply: bulk(payload) })
    steps.push({ command: cmd('PING'), reply: '+PONG\r\n' })
    if (keys !== false) {
      const key = `${keys}:${who}`
      // Written once in the bystander's own database: a command run in another one misses it.
      steps.push({ command: cmd('GET', `${key}:home`), reply: bulk('here') })
      steps.push({ command: cmd('SET', key, `${n}:${i}`), reply: '+OK\r\n' })
      steps.push({ command: cmd('GET', key), reply: bulk(`${n}:${i}`) })
      steps.push({ command: cmd('INCR', `${key}:n`), reply: `:${n * 1000 + i + 1}\r\n` })
      steps.push({ command: cmd('GET', `${key}:missing`), reply: '$-1\r\n' })
    } else {
      steps.push({ command: cmd('EVAL', 'return {1, "two", {3}}', '0'), reply: '*3\r\n:1\r\n$3\r\ntwo\r\n*1\r\n:3\r\n' })
    }
  }
  return steps.slice(0, size)
}

/** Where two reply streams part, with a little of each from there. */
function difference (want: string, got: string): string {
  let at = 0
  while (at < want.length && want[at] === got[at]) at++
  const from = Math.max(0, at - 40)
  return `replies differ at byte ${at}: want …${JSON.stringify(want.slice(from, at + 120))}, got …${JSON.stringify(got.slice(from, at + 120))}`
}

export async function startCheckedBystanders (port: number, options: CheckedBystanderOptions = {}): Promise<CheckedBystanders> {
  const count = options.count ?? 3
  const keys = options.keys ?? `bystander:${process.pid}:${Math.random().toString(36).slice(2)}`
  const size = options.pipeline ?? 24
  const pauseMs = options.pauseMs ?? 2
  const clients = await Promise.all(Array.from({ length: count }, async () => await RawClient.connect(port)))
  const ids: number[] = []
  const readers = clients.map((c) => new FrameReader(c))
  for (const [i, c] of clients.entries()) {
    const reader = readers[i]
    if (options.resp === 3) {
      c.write(cmd('HELLO', '3'))
      const hello = await reader.next()
      if (!hello.startsWith('%')) throw new Error(`HELLO 3 answered ${JSON.stringify(hello)}`)
    }
    if (options.db !== undefined && options.db !== 0) {
      c.write(cmd('SELECT', String(options.db)))
      const selected = await reader.next()
      if (selected !== '+OK\r\n') throw new Error(`SELECT answered ${JSON.stringify(selected)}`)
    }
    if (keys !== false) {
      c.write(cmd('SET', `${keys}:${ids.length}:home`, 'here'))
      const set = await reader.next()
      if (set !== '+OK\r\n') throw new Error(`SET answered ${JSON.stringify(set)}`)
    }
    c.write(cmd('CLIENT', 'ID'))
    ids.push(Number(/^:(\d+)\r\n$/.exec(await reader.next())?.[1]))
  }
  const done = new Array<number>(count).fill(0)
  const failures: string[] = []
  let waiters: Array<() => void> = []
  let running = true
  const wake = (): void => {
    const w = waiters
    waiters = []
    for (const f of w) f()
  }
  const loops = clients.map(async (c, who) => {
    try {
      for (let n = 0; running; n++) {
        const steps = round(who, n, keys, size)
        if (keys !== false) {
          // Set the counter so that this round's INCRs give n * 1000 + i + 1.
          steps.unshift({ command: cmd('SET', `${keys}:${who}:n`, String(n * 1000)), reply: '+OK\r\n' })
        }
        c.write(Buffer.concat(steps.map((s) => s.command)))
        const want = steps.map((s) => s.reply).join('')
        // One whole frame per command, so a shorter or longer reply shows as itself.
        const got = (await readers[who].take(steps.length, 15000)).join('')
        if (got !== want) {
          failures.push(`bystander ${who} round ${n}: ${difference(want, got)}`)
          return
        }
        done[who]++
        wake()
        if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
      // Nothing more may follow the last round's replies.
      const tail = await readers[who].framesBeforeSentinel(15000)
      if (tail.length > 0) failures.push(`bystander ${who}: extra replies after its last round: ${JSON.stringify(tail)}`)
    } catch (err) {
      failures.push(`bystander ${who}: ${(err as Error).message}`)
    } finally {
      wake()
    }
  })
  return {
    ids,
    get rounds () { return Math.min(...done) },
    failures,
    async moreRounds (n = 1, timeoutMs = 15000): Promise<void> {
      const target = done.map((d) => d + n)
      const deadline = Date.now() + timeoutMs
      while (done.some((d, i) => d < target[i])) {
        if (failures.length > 0) throw new Error(`a bystander failed: ${failures.join('; ')}`)
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`bystanders completed ${done.join(', ')} rounds, want ${target.join(', ')}`)
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left)
          waiters.push(() => { clearTimeout(t); resolve() })
        })
      }
    },
    async stop (): Promise<string[]> {
      running = false
      await Promise.all(loops)
      for (const c of clients) c.close()
      return failures
    }
  }
}
