import { ProxyError } from '../errors.js'
import type { UpstreamConnection } from './upstream-connection.js'

/** A holder of idle pool connections that can give one back on demand (a router's shared lanes). */
export interface IdleLender {
  /** Gives one idle connection back to the pool now, if it has one to spare; true if it did. */
  giveBackIdle (): boolean
}

/** Where a router gets its connections: the pool itself, or a view of it as one ACL user. */
export interface ConnectionSource {
  /** `requester`: the lender asking, which is not asked to give back one of its own. */
  acquire (priority?: 0 | 1, requester?: IdleLender): Promise<UpstreamConnection>
  release (conn: UpstreamConnection): void
  destroy (conn: UpstreamConnection): void
  /** Asked for an idle connection when the pool is full and someone waits. */
  addLender (lender: IdleLender): void
  removeLender (lender: IdleLender): void
}

/** Redis refused the user's credentials; the error is Redis's own line, for the client. */
export class UpstreamAuthError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_UPSTREAM_AUTH'
  constructor (readonly reply: Buffer) {
    super(reply.toString('latin1', 1, reply.length - 2))
  }
}

/**
 * The pool's connections as one Redis ACL user: each one lent out has answered `AUTH <user>
 * <password>` with +OK first, and goes back to the pool only after a scrub (RESET, which
 * returns it to the default user, then the handshake with the upstream URL's credentials).
 * Every connection still comes from, and counts against, the one pool (--pool-size).
 */
export class IdentityPool implements ConnectionSource {
  /** `user` null: the one-argument AUTH <password> (the default user, with Redis's own errors for it). */
  constructor (private readonly pool: ConnectionSource, readonly user: string | null, private readonly password: string) {}

  async acquire (priority: 0 | 1 = 0, requester?: IdleLender): Promise<UpstreamConnection> {
    const conn = await this.pool.acquire(priority, requester)
    try {
      // A lane given back may be in another database or protocol. Switching it back later
      // would be a SELECT or HELLO under this user, who may not be allowed them and whose
      // direct connection would never send them: switch it back now, as the URL's user.
      if (!conn.atDefaults) await conn.scrub()
      await authenticate(conn, this.user, this.password)
    } catch (err) {
      this.pool.destroy(conn)
      throw err
    }
    return conn
  }

  release (conn: UpstreamConnection): void {
    if (!conn.isReady) {
      this.pool.destroy(conn)
      return
    }
    conn.scrub().then(() => { this.pool.release(conn) }, () => { this.pool.destroy(conn) })
  }

  destroy (conn: UpstreamConnection): void {
    this.pool.destroy(conn)
  }

  addLender (lender: IdleLender): void {
    this.pool.addLender(lender)
  }

  removeLender (lender: IdleLender): void {
    this.pool.removeLender(lender)
  }
}

/** AUTH on `conn`; resolves on +OK, rejects with Redis's error (UpstreamAuthError) otherwise. */
export async function authenticate (conn: UpstreamConnection, user: string | null, password: string): Promise<void> {
  const args = user === null ? ['AUTH', Buffer.from(password, 'latin1')] : ['AUTH', Buffer.from(user, 'latin1'), Buffer.from(password, 'latin1')]
  await new Promise<void>((resolve, reject) => {
    conn.sendInternal(args, (frame, err) => {
      if (err !== null) reject(err)
      else if (frame !== null && frame.toString('latin1') === '+OK\r\n') resolve()
      else reject(new UpstreamAuthError(frame ?? Buffer.from('-ERR no reply to AUTH\r\n')))
    })
  })
}
