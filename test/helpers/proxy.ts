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
