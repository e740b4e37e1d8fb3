import type { ProxyServer } from '../proxy-server.js'
import { isRespoolMessage, startPaused, type ToPrimary, type ToWorker } from './worker-messages.js'

/**
 * A worker's side of the IPC channel (--workers): it reports that it listens, answers the
 * primary's questions (metrics for aggregation, readiness), and applies what the primary passes
 * on (drain, reload, and the admin commands another worker received).
 */
export function attachToPrimary (server: ProxyServer, drain: (reason: string) => void): void {
  const send = (message: ToPrimary): void => {
    if (process.connected) process.send?.(message)
  }
  server.peers = {
    pause: (ms) => { send({ respool: 'peers', message: { respool: 'pause', ms } }) },
    resume: () => { send({ respool: 'peers', message: { respool: 'resume' } }) },
    reload: () => { send({ respool: 'peers', message: { respool: 'reload' } }) }
  }
  const paused = startPaused()
  if (paused !== null) server.pause(paused)
  process.on('message', (message: unknown) => {
    if (!isRespoolMessage<ToWorker>(message)) return
    switch (message.respool) {
      case 'drain':
        send({ respool: 'draining', graceMs: server.config.shutdownGraceMs })
        drain('primary')
        break
      case 'reload': server.reloadFromSource().catch(() => {}); break
      case 'pause': server.pause(message.ms); break
      case 'resume': server.resume(); break
      case 'query':
        answer(server, message.what).then((value) => { send({ respool: 'answer', id: message.id, value }) },
          (err: Error) => { send({ respool: 'answer', id: message.id, value: { error: err.message } }) })
        break
    }
  })
  // A primary that is gone (SIGKILL) takes its workers with it: node:cluster exits a worker
  // whose IPC channel closes unexpectedly.
}

/** Tells the primary where this worker listens (the real port when --port 0). */
export function reportListening (server: ProxyServer): void {
  const { address, port } = server.address
  if (process.connected) process.send?.({ respool: 'listening', address, port } satisfies ToPrimary)
}

async function answer (server: ProxyServer, what: 'metrics' | 'readiness'): Promise<unknown> {
  if (what === 'metrics') return await server.metrics.registry.getMetricsAsJSON()
  return server.readiness()
}
