import { ProxyServer, type ProxyServerOptions } from '../../src/proxy-server.js'
import type { ProxyOptions } from '../../src/config.js'
import { createLogger } from '../../src/ops/logger.js'
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

/**
 * Holds one pinned connection with a client blocked in `WAIT 1 0` (WAIT counts replicas for its
 * own connection, so it always blocks on a pin; with no replica it waits forever), so that a
 * proxy with `poolSize: 2` has exactly one shared lane left: every other client shares it.
 * Resolves once the pin is held; the returned function releases it (the client disconnects).
 */
export async function holdPin (proxy: ProxyServer): Promise<() => void> {
  const net = await import('node:net')
  const before = proxy.snapshot().pins
  const socket = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  socket.on('error', () => {})
  await new Promise<void>((resolve) => socket.once('connect', () => { resolve() }))
  socket.write('*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n')
  const deadline = Date.now() + 5000
  while (proxy.snapshot().pins <= before) {
    if (Date.now() > deadline) throw new Error('the pin holder got no pin within 5 s')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return () => { socket.destroy() }
}
