import cluster, { type Worker } from 'node:cluster'
import { rmSync } from 'node:fs'
import type http from 'node:http'
import type { ProxyConfig } from '../config.js'
import type { Logger } from './logger.js'
import { startHttpEndpoints } from './http-endpoints.js'
import { WorkerMetrics } from './worker-metrics.js'
import { sharedWhileRunning } from './shared-call.js'
import { isRespoolMessage, WORKER_ENV, WORKER_PAUSED_ENV, type ToPrimary, type ToWorker } from './worker-messages.js'

/** One place in the set of workers: the process filling it now, and how it has fared. */
interface Slot {
  index: number
  worker: Worker | null
  listening: boolean
  listeningSince: number
  /** Deaths in a row without a long enough life in between: sets the backoff before the next fork. */
  failures: number
  /** The replacement waiting out its backoff. */
  replacement: NodeJS.Timeout | null
  /** Forked into a RESPOOL PAUSE: told again once it listens, in case a RESUME came while it loaded. */
  startedPaused: boolean
}

/** A replaced worker that had lived this long starts again at once; shorter lives back off. */
const STABLE_MS = 30_000
const BACKOFF_BASE_MS = 100
const BACKOFF_MAX_MS = 10_000
/** How long a worker that drained on its own signal waits to be replaced, in case the primary got one too. */
const RECYCLE_DELAY_MS = 200
/** How long a worker has to answer the primary's question (metrics, readiness). */
const QUERY_TIMEOUT_MS = 2000

/**
 * The primary process of --workers N: forks N workers with node:cluster, takes no client
 * traffic itself, replaces a worker that dies, drains them all on SIGTERM/SIGINT, passes
 * SIGHUP and the admin commands meant for every worker on, and serves --metrics-port with the
 * workers' metrics aggregated. Resolves with the exit code.
 *
 * Connections are spread by node:cluster's round-robin scheduling (the primary accepts and
 * hands each connection to the next worker), not SO_REUSEPORT: Node 20's net.Server has no
 * `reusePort`, and the kernel's hash spreads a few long-lived connections (a sidecar's
 * typical client pool) unevenly, leaving one worker with most of them.
 */
export class WorkerPrimary {
  readonly #config: ProxyConfig
  readonly #log: Logger
  readonly #slots: Slot[]
  readonly #metrics: WorkerMetrics
  #httpServer: http.Server | null = null
  #draining = false
  #started = false
  #nextQuery = 1
  readonly #pending = new Map<number, (value: unknown) => void>()
  #listenAddress: { address: string, port: number } | null = null
  #onStarted: { resolve: () => void, reject: (code: number) => void } | null = null
  #onAllExited: (() => void) | null = null
  #exitCode = 0
  /** The longest grace a draining worker honours: the start value until a reloaded worker says more. */
  #graceMs: number
  #backstop: NodeJS.Timeout | null = null
  readonly #reloadSource: (() => Promise<ProxyConfig>) | null
  /** RESPOOL PAUSE in force on the workers: when it ends (Infinity: at RESUME), for a replacement to join. */
  #pausedUntil: number | null = null

  /**
   * `reloadSource` reads the configuration again (SIGHUP, RESPOOL RELOAD): the primary takes
   * its log level from it, as every worker does.
   */
  constructor (config: ProxyConfig, log: Logger, reloadSource: (() => Promise<ProxyConfig>) | null = null) {
    this.#config = config
    this.#log = log
    this.#reloadSource = reloadSource
    this.#graceMs = config.shutdownGraceMs
    this.#slots = Array.from({ length: config.workers }, (_, index) => ({ index, worker: null, listening: false, listeningSince: 0, failures: 0, replacement: null, startedPaused: false }))
    this.#metrics = new WorkerMetrics(() => this.#slots.filter((s) => s.listening).length)
  }

  /** Forks every worker and waits until all listen; resolves with the exit code when it is over. */
  async run (): Promise<number> {
    cluster.schedulingPolicy = cluster.SCHED_RR
    // A stale socket file from a crashed run is removed once, here: a worker removing it would
    // take away the one the primary already listens on for the others.
    if (this.#config.unixSocket !== undefined) rmSync(this.#config.unixSocket, { force: true })
    const exited = new Promise<void>((resolve) => { this.#onAllExited = resolve })
    const stop = async (code: number): Promise<number> => {
      if (code !== 0) this.#exitCode = code
      await this.#shutdown(true)
      await exited
      return this.#exitCode
    }
    this.#installSignals()
    try {
      await new Promise<void>((resolve, reject) => {
        this.#onStarted = { resolve, reject }
        for (const slot of this.#slots) this.#fork(slot)
      })
    } catch (code) {
      return await stop(code as number)
    }
    this.#started = true
    if (this.#draining) {
      // A signal came while the workers were starting: they drain as soon as they listen.
      await exited
      return this.#exitCode
    }
    if (this.#config.metricsPort !== undefined) {
      try {
        this.#httpServer = await startHttpEndpoints({
          metrics: sharedWhileRunning(async () => await this.#metrics.aggregate(await this.#ask('metrics') as unknown[][])),
          readiness: sharedWhileRunning(async () => await this.#readiness())
        }, this.#config.metricsHost ?? this.#config.host, this.#config.metricsPort)
      } catch (err) {
        process.stderr.write(`respool: cannot serve metrics on ${this.#config.metricsHost ?? this.#config.host}:${this.#config.metricsPort}: ${(err as Error).message}\n`)
        return await stop(1)
      }
    }
    const at = this.#listenAddress as { address: string, port: number }
    const hostPort = at.address.includes(':') ? `[${at.address}]:${at.port}` : `${at.address}:${at.port}`
    this.#log.info({ listen: `${at.address}:${at.port}`, workers: this.#slots.length, poolSize: this.#config.poolSize },
      `respool listening on ${this.#config.tlsCert !== undefined ? 'tls://' : ''}${hostPort}${this.#config.unixSocket !== undefined ? ` and ${this.#config.unixSocket}` : ''} with ${this.#slots.length} workers, at most ${this.#config.poolSize} upstream connections in all`)
    await exited
    return this.#exitCode
  }

  #fork (slot: Slot): void {
    const env: Record<string, string> = { [WORKER_ENV]: `${slot.index}/${this.#slots.length}` }
    const pausedMs = this.#pauseLeft()
    if (pausedMs !== null) env[WORKER_PAUSED_ENV] = String(pausedMs)
    slot.startedPaused = pausedMs !== null
    const worker = cluster.fork(env)
    slot.worker = worker
    slot.listening = false
    worker.on('message', (message: unknown) => { this.#onMessage(slot, worker, message) })
    worker.on('exit', (code: number | null, signal: string | null) => { this.#onExit(slot, worker, code, signal) })
    // A message sent as the worker dies fails on its channel: that is its exit's business, not a crash.
    worker.on('error', (err: Error) => { this.#log.debug({ worker: slot.index, err: err.message }, 'worker channel error') })
  }

  #onMessage (slot: Slot, worker: Worker, message: unknown): void {
    if (!isRespoolMessage<ToPrimary>(message)) return
    switch (message.respool) {
      case 'listening':
        // Told to drain before it could hear it (still loading): tell it again.
        if (this.#draining) this.#send(slot, { respool: 'drain' })
        slot.listening = true
        slot.listeningSince = Date.now()
        this.#listenAddress ??= { address: message.address, port: message.port }
        if (this.#started) this.#log.info({ worker: slot.index, workerPid: worker.process.pid }, 'replacement worker listening')
        if (slot.startedPaused) {
          // A RESUME (or a shorter PAUSE) sent while it loaded found no listener: say it again.
          const left = this.#pauseLeft()
          this.#send(slot, left === null ? { respool: 'resume' } : { respool: 'pause', ms: left })
        }
        if (this.#slots.every((s) => s.listening)) this.#onStarted?.resolve()
        break
      case 'answer':
        this.#pending.get(message.id)?.(message.value)
        break
      case 'draining':
        if (message.graceMs > this.#graceMs) {
          this.#graceMs = message.graceMs
          if (this.#backstop !== null) this.#armBackstop()
        }
        break
      case 'peers':
        for (const other of this.#slots) if (other !== slot) this.#send(other, message.message)
        if (message.message.respool === 'pause') this.#pausedUntil = message.message.ms > 0 ? Date.now() + message.message.ms : Infinity
        if (message.message.respool === 'resume') this.#pausedUntil = null
        if (message.message.respool === 'reload') {
          this.#reloadOwnLogLevel().catch(() => {})
          this.#replaceWaitingNow()
        }
        break
    }
  }

  #onExit (slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return
    const wasListening = slot.listening
    slot.worker = null
    slot.listening = false
    if (this.#draining) {
      if (this.#slots.every((s) => s.worker === null)) this.#allExited()
      return
    }
    const exitCode = code !== null && code !== 0 ? code : 1
    if (this.#started && code === 0) {
      // A worker exits 0 only after a drain it was signalled to do itself: a graceful recycle
      // (`kill -TERM <worker pid>`), replaced at once. Ctrl-C and `pkill` reach the primary as
      // well; it may not have handled its signal yet, so the replacement waits a moment and
      // is dropped if the primary is draining by then.
      setTimeout(() => {
        if (this.#draining) return
        this.#log.info({ worker: slot.index, workerPid: worker.process.pid }, 'worker drained and exited; starting a replacement')
        this.#fork(slot)
      }, RECYCLE_DELAY_MS)
      return
    }
    if (!this.#started) {
      // A worker that cannot start (a bad setting found only at start, the port in use) would
      // fail the same way again: stop with its error (it wrote it on stderr) rather than loop.
      this.#log.error({ worker: slot.index, code, signal }, 'worker failed to start; stopping')
      this.#onStarted?.reject(exitCode)
      return
    }
    const refused = !wasListening && code === 2
    if (refused) {
      // The configuration changed under a running respool into one a worker refuses (it wrote
      // why on stderr). The other workers keep serving on the configuration they have (a reload
      // refused the same way left it unchanged); this one is tried again with the backoff, so
      // a fixed file brings it back. /readyz says it is missing meanwhile.
    }
    if (wasListening && Date.now() - slot.listeningSince >= STABLE_MS) slot.failures = 0
    const backoff = slot.failures === 0 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (slot.failures - 1))
    slot.failures++
    if (refused) {
      this.#log.error({ worker: slot.index, code, restartInMs: backoff }, 'replacement worker refused the configuration; trying again with a backoff (or at once on a reload)')
    } else {
      this.#metrics.restarts++
      this.#log.warn({ worker: slot.index, workerPid: worker.process.pid, code, signal, restartInMs: backoff }, 'worker died; its clients lost their connections; starting a replacement')
    }
    slot.replacement = setTimeout(() => {
      slot.replacement = null
      if (!this.#draining) this.#fork(slot)
    }, backoff)
  }

  /**
   * A RESPOOL PAUSE in force on the workers: its time left in ms (0: until RESUME), for a
   * replacement to start in; null when there is none.
   */
  #pauseLeft (): number | null {
    const until = this.#pausedUntil
    if (until === null) return null
    if (!Number.isFinite(until)) return 0
    const left = Math.ceil(until - Date.now())
    if (left > 0) return left
    this.#pausedUntil = null
    return null
  }

  /** A reload may have fixed what a waiting replacement refused: it starts now. */
  #replaceWaitingNow (): void {
    for (const slot of this.#slots) {
      if (slot.replacement === null || this.#draining) continue
      clearTimeout(slot.replacement)
      slot.replacement = null
      this.#fork(slot)
    }
  }

  #installSignals (): void {
    let signals = 0
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++
      if (signals > 1) {
        this.#log.warn({ signal }, 'second signal: stopping every worker now')
        for (const slot of this.#slots) slot.worker?.process.kill('SIGKILL')
        this.#exitCode = 1
        return
      }
      this.#log.info({ signal, workers: this.#slots.length }, 'draining every worker: no new clients; finishing in-flight commands')
      this.#shutdown(false).catch(() => {})
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
    process.on('SIGHUP', () => {
      this.#reloadOwnLogLevel().finally(() => {
        this.#log.info('reloading every worker')
        for (const slot of this.#slots) this.#send(slot, { respool: 'reload' })
        this.#replaceWaitingNow()
      }).catch(() => {})
    })
  }

  /**
   * The primary's share of a reload: its log level. A configuration that does not load is
   * left to the workers, which report it and keep theirs.
   */
  async #reloadOwnLogLevel (): Promise<void> {
    if (this.#reloadSource === null) return
    let level: string
    try {
      level = (await this.#reloadSource()).logLevel
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'primary: configuration not reloaded')
      return
    }
    if (level === this.#log.level) return
    this.#log.level = level
    this.#log.info({ logLevel: level }, 'primary: log level reloaded')
  }

  /** Drains every worker (within --shutdown-grace, then kills what is left) and closes the HTTP side. */
  async #shutdown (now: boolean): Promise<void> {
    if (this.#draining) return
    this.#draining = true
    const httpServer = this.#httpServer
    this.#httpServer = null
    if (httpServer !== null) {
      httpServer.closeAllConnections()
      httpServer.close()
    }
    for (const slot of this.#slots) {
      if (slot.replacement !== null) clearTimeout(slot.replacement)
      slot.replacement = null
      if (now) slot.worker?.process.kill('SIGKILL')
      else this.#send(slot, { respool: 'drain' })
    }
    if (this.#slots.every((s) => s.worker === null)) {
      this.#allExited()
      return
    }
    this.#armBackstop()
  }

  /** A worker honours the grace itself; this is the backstop for one that hangs. */
  #armBackstop (): void {
    if (this.#backstop !== null) clearTimeout(this.#backstop)
    this.#backstop = setTimeout(() => {
      for (const slot of this.#slots) {
        if (slot.worker === null) continue
        this.#log.error({ worker: slot.index }, 'worker still running after the shutdown grace; killing it')
        this.#exitCode = 1
        slot.worker.process.kill('SIGKILL')
      }
    }, this.#graceMs + 5000)
    this.#backstop.unref()
  }

  #allExited (): void {
    // A signal during start: nothing is left to wait for.
    if (!this.#started) this.#onStarted?.reject(0)
    this.#onAllExited?.()
    this.#onAllExited = null
  }

  #send (slot: Slot, message: ToWorker): void {
    const worker = slot.worker
    if (worker !== null && worker.isConnected()) worker.send(message)
  }

  /** Asks every listening worker; fails when one does not answer in time. */
  async #ask (what: 'metrics' | 'readiness'): Promise<unknown[]> {
    const asked = this.#slots.filter((s) => s.listening)
    return await Promise.all(asked.map(async (slot) => await new Promise<unknown>((resolve, reject) => {
      const id = this.#nextQuery++
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(new Error(`worker ${slot.index} did not answer within ${QUERY_TIMEOUT_MS} ms`))
      }, QUERY_TIMEOUT_MS)
      this.#pending.set(id, (value) => {
        clearTimeout(timer)
        this.#pending.delete(id)
        const error = (value as { error?: string } | null)?.error
        if (typeof error === 'string') reject(new Error(`worker ${slot.index}: ${error}`))
        else resolve(value)
      })
      this.#send(slot, { respool: 'query', id, what })
    })))
  }

  /** Ready when not draining, every worker listens, and each says it is ready. */
  async #readiness (): Promise<{ ready: boolean, reason: string }> {
    if (this.#draining) return { ready: false, reason: 'draining' }
    const listening = this.#slots.filter((s) => s.listening)
    if (listening.length < this.#slots.length) return { ready: false, reason: `${listening.length} of ${this.#slots.length} workers listening` }
    const answers = await this.#ask('readiness') as Array<{ ready: boolean, reason: string }>
    const notReady = answers.findIndex((a) => !a.ready)
    if (notReady !== -1) return { ready: false, reason: `worker ${listening[notReady].index}: ${answers[notReady].reason}` }
    return { ready: true, reason: `ready (${this.#slots.length} workers)` }
  }
}
