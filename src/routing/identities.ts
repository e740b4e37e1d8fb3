import { Router } from './router.js'
import { IdentityPool, type ConnectionSource } from '../upstream/identity-pool.js'
import type { Logger } from '../ops/logger.js'

interface Identity {
  readonly router: Router
  readonly pool: IdentityPool
  sessions: number
}

/**
 * Redis ACL users behind one respool. With no client authentication of respool's own
 * (--password/--user unset), a client's AUTH is checked by Redis, and from then on its commands
 * run on connections authenticated as that user: shared lanes of their own, multiplexed among
 * that user's clients, with pins of their own. Every such connection comes from the one pool
 * (--pool-size bounds them all) and goes back to it, scrubbed, when idle. A user's password is
 * kept only while one of its clients is connected.
 */
export class Identities {
  readonly #identities = new Map<string, Identity>()

  constructor (private readonly pool: ConnectionSource, private readonly log: Logger,
    private readonly sizes: () => { poolSize: number, maxPins: number }) {}

  /**
   * Checks `user`/`password` with Redis (an AUTH on a pool connection) and returns the router
   * for that user, held for one more session (detach when done). Rejects with Redis's error.
   */
  async attach (user: string | null, password: string): Promise<Router> {
    const key = `${user ?? ''}\0${user === null ? '1' : '2'}\0${password}`
    let identity = this.#identities.get(key)
    if (identity === undefined) {
      const pool = new IdentityPool(this.pool, user, password)
      const conn = await pool.acquire(0) // Redis says yes or no here
      pool.release(conn)
      identity = this.#identities.get(key) // another session may have made it meanwhile
      if (identity === undefined) {
        identity = { router: new Router(pool, this.log, { ...this.sizes(), keepLanes: 0 }), pool, sessions: 0 }
        this.#identities.set(key, identity)
      }
    }
    identity.sessions++
    return identity.router
  }

  /** One session of that router's user is gone; the last one takes the user's connections and password with it. */
  detach (router: Router): void {
    for (const [key, identity] of this.#identities) {
      if (identity.router !== router) continue
      if (--identity.sessions === 0) {
        this.#identities.delete(key)
        router.close().catch(() => {})
      }
      return
    }
  }

  /** Pool size or pin cap changed (reload). */
  resize (poolSize: number, maxPins: number): void {
    for (const identity of this.#identities.values()) identity.router.resize(poolSize, maxPins)
  }

  /** Users with clients now (names only, never passwords). */
  get users (): string[] {
    return [...this.#identities.values()].map((i) => i.pool.user ?? 'default')
  }

  get connections (): number {
    let n = 0
    for (const identity of this.#identities.values()) n += identity.router.laneCount + identity.router.pinCount
    return n
  }

  async close (): Promise<void> {
    const routers = [...this.#identities.values()].map((i) => i.router)
    this.#identities.clear()
    await Promise.all(routers.map(async (r) => { await r.close() }))
  }
}
