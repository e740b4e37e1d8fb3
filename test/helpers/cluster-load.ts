import { Redis } from 'ioredis'
import assert from 'node:assert/strict'

export interface LoadError {
  /** performance.now() when the failed command was sent. */
  sentAt: number
  message: string
}

export interface RunningLoad {
  /** Rounds completed without an error. */
  readonly rounds: number
  /** Stops the clients after their current round; resolves with what went wrong. */
  stop (): Promise<LoadError[]>
  /** Every key whose last write is known has that value (read with `reader`), every counter its count. */
  check (reader: Redis): Promise<void>
}

/**
 * Several ioredis clients (non-cluster mode, pointed at respool) writing and reading keys of
 * every master in a loop: SET then GET of the same key (read-your-writes), INCR of counters,
 * and MGET over keys of several slots. Each client owns its keys, so what every key must hold
 * is known; a command that failed leaves its key unknown (it may or may not have run).
 */
export function startLoad (port: number, clients = 4, keysPerClient = 200): RunningLoad {
  const errors: LoadError[] = []
  const values = new Map<string, string>()
  const counters = new Map<string, number>()
  const unknown = new Set<string>()
  let running = true
  let rounds = 0
  const conns = Array.from({ length: clients }, () => new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableOfflineQueue: false }))
  const loops = conns.map(async (client, c) => {
    await new Promise((resolve) => { client.once('ready', resolve) })
    for (let n = 0; running; n++) {
      const key = `load:${c}:${n % keysPerClient}`
      const counter = `count:${c}:${n % 20}`
      let sentAt = performance.now()
      const fail = (err: unknown, ...keys: string[]): void => {
        errors.push({ sentAt, message: (err as Error).message })
        for (const k of keys) unknown.add(k)
      }
      try {
        await client.set(key, String(n))
        values.set(key, String(n))
      } catch (err) { fail(err, key); continue }
      sentAt = performance.now()
      try {
        const got = await client.get(key)
        if (got !== String(n)) errors.push({ sentAt, message: `${key}: read ${String(got)} after writing ${n}` })
      } catch (err) { fail(err); continue }
      sentAt = performance.now()
      try {
        const count = await client.incr(counter)
        counters.set(counter, count)
      } catch (err) { fail(err, counter); continue }
      if (n % 5 === 0) {
        const keys = [0, 1, 2, 3].map((i) => `load:${c}:${(n + i * 37) % keysPerClient}`)
        sentAt = performance.now()
        try {
          const got = await client.mget(...keys)
          keys.forEach((k, i) => {
            if (!unknown.has(k) && got[i] !== (values.get(k) ?? null)) errors.push({ sentAt, message: `MGET ${k}: ${String(got[i])}, expected ${String(values.get(k))}` })
          })
        } catch (err) { fail(err); continue }
      }
      rounds++
    }
  })
  return {
    get rounds () { return rounds },
    async stop () {
      running = false
      await Promise.all(loops)
      for (const client of conns) client.disconnect()
      return errors
    },
    async check (reader) {
      const keys = [...values.keys()].filter((k) => !unknown.has(k))
      const got = await reader.mget(...keys)
      keys.forEach((k, i) => { assert.equal(got[i], values.get(k), k) })
      for (const [k, count] of counters) if (!unknown.has(k)) assert.equal(await reader.get(k), String(count), k)
    }
  }
}
