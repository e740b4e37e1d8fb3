/**
 * What the primary and its workers (--workers) say to each other over the cluster IPC channel.
 * Every message carries `respool` so that other users of the channel (node:cluster itself,
 * prom-client) are told apart.
 */

/** The environment variable that tells a forked process which worker it is ("index/count"). */
export const WORKER_ENV = '__RESPOOL_WORKER'
/**
 * Set for a replacement forked while RESPOOL PAUSE holds the other workers: the pause's time left
 * in ms (0: until RESUME). The worker starts paused, so no command slips through before it hears.
 */
export const WORKER_PAUSED_ENV = '__RESPOOL_WORKER_PAUSED'

/** Primary → worker. */
export type ToWorker =
  | { respool: 'drain' }
  | { respool: 'reload' }
  | { respool: 'pause', ms: number }
  | { respool: 'resume' }
  | { respool: 'query', id: number, what: 'metrics' | 'readiness' }

/** Worker → primary. */
export type ToPrimary =
  | { respool: 'listening', address: string, port: number }
  | { respool: 'answer', id: number, value: unknown }
  /** Draining as the primary asked, within this grace (a reload may have changed it since start). */
  | { respool: 'draining', graceMs: number }
  /** An admin command meant for every worker (RESPOOL PAUSE/RESUME/RELOAD): the primary passes it to the others. */
  | { respool: 'peers', message: ToWorker }

export function isRespoolMessage<T extends { respool: string }> (message: unknown): message is T {
  return typeof message === 'object' && message !== null && typeof (message as { respool?: unknown }).respool === 'string'
}

/** The pause a replacement starts in (ms; 0 until RESUME), or null. */
export function startPaused (env: NodeJS.ProcessEnv = process.env): number | null {
  const value = env[WORKER_PAUSED_ENV]
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : null
}

/** This process's worker index and the number of workers, or null when it is no worker. */
export function workerIdentity (env: NodeJS.ProcessEnv = process.env): { index: number, count: number } | null {
  const m = /^(\d+)\/(\d+)$/.exec(env[WORKER_ENV] ?? '')
  if (m === null) return null
  return { index: Number(m[1]), count: Number(m[2]) }
}
