import { ProxyServer, type ProxyServerOptions } from '../../src/proxy-server.js'
import type { ProxyOptions } from '../../src/config.js'
import { createLogger } from '../../src/logger.js'

/** Starts a proxy on a free port. RESPOOL_TEST_LOG=debug shows its logs on stderr. */
export async function startProxy (options: ProxyOptions, serverOptions: ProxyServerOptions = {}): Promise<ProxyServer> {
  const level = process.env.RESPOOL_TEST_LOG ?? 'silent'
  const logger = serverOptions.logger ?? createLogger(level, process.stderr)
  const server = new ProxyServer({ host: '127.0.0.1', port: 0, ...options }, { ...serverOptions, logger })
  await server.listen()
  return server
}

/** Upstream connections respool holds, as Redis sees them (CLIENT LIST, name=respool). */
export async function upstreamConnectionCount (redisPort: number): Promise<number> {
  const { Redis } = await import('ioredis')
  const admin = new Redis({ port: redisPort, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 })
  try {
    await admin.connect()
    const list = await admin.client('LIST') as string
    return list.split('\n').filter((line) => / name=respool /.test(line)).length
  } finally {
    admin.disconnect()
  }
}
