import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from './redis-server.js'
import { waitFor } from './wait.js'

/**
 * A redis-server that accepts at most `limit` connections at once (--maxclients), where the
 * limit is the proxy's pool size plus the direct connections the test itself holds open. A
 * proxy that ever holds one connection more than its bound is answered `-ERR max number of
 * clients reached` and Redis counts the refusal in rejected_connections, which the test checks
 * at the end: the bound is enforced on every connection, not sampled now and then.
 *
 * `admin` is one of the test's direct connections (counted in the limit): use it, rather than
 * opening more, for every look at Redis.
 */
export interface BoundedRedis {
  redis: RedisServer
  admin: Redis
  limit: number
  /** Upstream connections respool holds now, as Redis sees them (CLIENT LIST, name=respool). */
  upstreamConnections (): Promise<number>
  /** Connections Redis refused for being over the limit since it started. */
  rejectedConnections (): Promise<number>
  /** Fails if Redis ever refused a connection for being over the limit. */
  assertNoneRejected (): Promise<void>
  stop (): Promise<void>
}

export async function startBoundedRedis (limit: number, args: string[] = []): Promise<BoundedRedis> {
  const redis = await startRedis(['--maxclients', String(limit), ...args])
  const admin = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 })
  const clientsInfo = async (): Promise<string> => await admin.info('clients')
  // The probe that saw Redis start may not have been freed yet: start from the admin alone.
  await waitFor(async () => /connected_clients:1\r\n/.test(await clientsInfo()), 'only the admin connection left')
  const bounded: BoundedRedis = {
    redis,
    admin,
    limit,
    async upstreamConnections () {
      const list = await admin.client('LIST') as string
      return list.split('\n').filter((line) => / name=respool /.test(line)).length
    },
    async rejectedConnections () {
      return Number(/rejected_connections:(\d+)/.exec(await admin.info('stats'))?.[1])
    },
    async assertNoneRejected () {
      assert.equal(await bounded.rejectedConnections(), 0, `Redis refused connections beyond --maxclients ${limit}`)
    },
    async stop () {
      admin.disconnect()
      await redis.stop()
    }
  }
  return bounded
}
