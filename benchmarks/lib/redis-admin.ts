/**
 * A direct admin connection to the benchmark's redis-server: resets keys between scenarios and
 * watches how many upstream connections respool holds (CLIENT LIST, name=respool), so a run can
 * report the most it ever saw next to --pool-size.
 */
import { Redis } from 'ioredis'

export class RedisAdmin {
  readonly redis: Redis

  constructor (port: number) {
    this.redis = new Redis({
      host: '127.0.0.1',
      port,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 1,
      connectionName: 'respool-bench-admin'
    })
  }

  async connect (): Promise<void> {
    await this.redis.connect()
  }

  async close (): Promise<void> {
    this.redis.disconnect()
  }

  /** Connections named "respool" (respool names every upstream connection it opens). */
  async respoolConnections (): Promise<{ respool: number, others: number }> {
    const list = await this.redis.client('LIST') as string
    let respool = 0
    let others = 0
    for (const line of list.split('\n')) {
      if (line.trim() === '') continue
      if (/ name=respool /.test(line)) respool++
      else if (!/ name=respool-bench-admin /.test(line)) others++
    }
    return { respool, others }
  }

  /** Starts polling CLIENT LIST every intervalMs; stop() returns the largest count seen. */
  watch (intervalMs = 100): ConnectionWatch {
    return new ConnectionWatch(this, intervalMs)
  }
}

export class ConnectionWatch {
  maxRespool = 0
  samples = 0
  errors = 0
  readonly #timer: NodeJS.Timeout
  #busy = false

  constructor (readonly admin: RedisAdmin, intervalMs: number) {
    this.#timer = setInterval(() => { void this.#poll() }, intervalMs)
    void this.#poll()
  }

  async #poll (): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const { respool } = await this.admin.respoolConnections()
      this.samples++
      if (respool > this.maxRespool) this.maxRespool = respool
    } catch {
      this.errors++
    } finally {
      this.#busy = false
    }
  }

  /** Stops polling (one last sample first). */
  async stop (): Promise<number> {
    clearInterval(this.#timer)
    await this.#poll()
    return this.maxRespool
  }
}
