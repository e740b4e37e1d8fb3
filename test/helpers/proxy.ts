import { ProxyServer, type ProxyServerOptions } from '../../src/proxy-server.js'
import type { ProxyOptions } from '../../src/config.js'
import { createLogger } from '../../src/logger.js'
import { type RawClient, cmd } from './raw-client.js'
import { FrameReader } from './resp-frames.js'

/** Starts a proxy on a free port. RESPOOL_TEST_LOG=debug shows its logs on stderr. */
export async function startProxy (options: ProxyOptions, serverOptions: ProxyServerOptions = {}): Promise<ProxyServer> {
  const level = process.env.RESPOOL_TEST_LOG ?? 'silent'
  const logger = serverOptions.logger ?? createLogger(level, process.stderr)
  const server = new ProxyServer({ host: '127.0.0.1', port: 0, ...options }, { ...serverOptions, logger })
  await server.listen()
  return server
}

/** respool's session for a client connection (asks CLIENT ID on it, so nothing else may be in flight there). */
export async function sessionOf (proxy: ProxyServer, client: RawClient): Promise<ReturnType<ProxyServer['sessions']>[number]> {
  client.write(cmd('CLIENT', 'ID'))
  const reply = await new FrameReader(client).next()
  const id = Number(/^:(\d+)\r\n$/.exec(reply)?.[1])
  const session = proxy.sessions().find((s) => s.id === id)
  if (session === undefined) throw new Error(`no session for CLIENT ID reply ${JSON.stringify(reply)}`)
  return session
}
