/**
 * A direct admin connection to the benchmark's redis-server: resets keys between scenarios and
 * watches respool's upstream connections during a run, so each figure can be reported next to
 * how many connections respool really used for it.
 *
 * Two counts per run:
 * - open: the most connections named `respool` (respool names every upstream connection it
 *   opens) that `CLIENT LIST` showed at once while the run went on;
 * - used: how many of those connections sent commands to Redis during the run. Redis 7.0's
 *   `CLIENT LIST` has no per-connection byte or command counter, so the kernel's is read instead:
 *   `ss -tin` gives bytes_sent for every socket connected to the redis-server port, and the
 *   socket is matched to its `CLIENT LIST` entry by respool's local port (`addr=`). A connection
 *   opened during the run counts only if it sent more than its handshake (`CLIENT SETNAME
 *   respool`, 42 bytes). Without `ss` on the PATH, used is null.
 *
 * respool fills lanes in order and opens another only while every lane is busy, and a connection
 * stays open after its lane goes idle, so open can be larger than used, and both can be far
 * below --pool-size.
 */
import { spawnSync } from 'node:child_process'
import { Redis } from 'ioredis'

/** Bytes a new upstream connection sends before any command: `CLIENT SETNAME respool` in RESP. */
export const HANDSHAKE_BYTES = '*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$7\r\nrespool\r\n'.length

export interface UpstreamUse {
  /** Most connections named respool open at once during the run. */
  open: number
  /** Connections named respool that sent commands during the run (null: `ss` not available). */
  used: number | null
  /** Command bytes each used connection sent during the run, largest first. */
  sentBytes: number[]
}

let ssWorks: boolean | null = null

/**
 * bytes_sent of every established TCP socket whose peer is 127.0.0.1:port, by local port
 * (kernel counters from `ss -tin`). Null when `ss` cannot be run.
 */
export function socketBytesSent (port: number): Map<number, number> | null {
  if (ssWorks === false) return null
  const r = spawnSync('ss', ['-t', '-i', '-n', '-H', 'state', 'established', 'dport', '=', `:${port}`], { encoding: 'utf8', timeout: 5000 })
  if (r.status !== 0 || typeof r.stdout !== 'string') {
    ssWorks = false
    return null
  }
  ssWorks = true
  const out = new Map<number, number>()
  let local: number | null = null
  for (const line of r.stdout.split('\n')) {
    const addr = /^\s*\d+\s+\d+\s+\S+:(\d+)\s+\S+:(\d+)/.exec(line)
    if (addr !== null) {
      local = Number(addr[2]) === port ? Number(addr[1]) : null
      if (local !== null) out.set(local, 0)
      continue
    }
    if (local === null) continue
    const sent = /\bbytes_sent:(\d+)/.exec(line)
    if (sent !== null) out.set(local, Number(sent[1]))
    local = null
  }
  return out
}

export class RedisAdmin {
  readonly redis: Redis
  readonly port: number

  constructor (port: number) {
    this.port = port
    this.redis = new Redis({
      host: '127.0.0.1',
      port,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 1,
      connectionName: 'respool-bench-admin'
    })
  }

  async connect (): Promise<void> {
    await this.redis.connect()
  }

  async close (): Promise<void> {
    this.redis.disconnect()
  }

  /** Connections named "respool" (respool names every upstream connection it opens), with their local ports. */
  async respoolConnections (): Promise<{ respool: number, others: number, ports: number[] }> {
    const list = await this.redis.client('LIST') as string
    let respool = 0
    let others = 0
    const ports: number[] = []
    for (const line of list.split('\n')) {
      if (line.trim() === '') continue
      if (/ name=respool /.test(line)) {
        respool++
        const addr = /\baddr=\S*:(\d+) /.exec(line)
        if (addr !== null) ports.push(Number(addr[1]))
      } else if (!/ name=respool-bench-admin /.test(line)) others++
    }
    return { respool, others, ports }
  }

  /**
   * Starts watching respool's upstream connections: CLIENT LIST every intervalMs, and the kernel's
   * byte counters now and at stop(). Only one respool may be connected to this redis-server
   * while a watch runs, or its connections are counted too.
   */
  watch (intervalMs = 100): ConnectionWatch {
    return new ConnectionWatch(this, intervalMs)
  }
}

export class ConnectionWatch {
  maxRespool = 0
  samples = 0
  errors = 0
  /** Local ports of every respool connection seen during the watch. */
  readonly ports = new Set<number>()
  readonly #before: Map<number, number> | null
  readonly #timer: NodeJS.Timeout
  #busy: Promise<void> | null = null

  constructor (readonly admin: RedisAdmin, intervalMs: number) {
    this.#before = socketBytesSent(admin.port)
    this.#timer = setInterval(() => { void this.#poll() }, intervalMs)
    void this.#poll()
  }

  async #poll (): Promise<void> {
    if (this.#busy !== null) return await this.#busy
    this.#busy = (async () => {
      try {
        const { respool, ports } = await this.admin.respoolConnections()
        this.samples++
        if (respool > this.maxRespool) this.maxRespool = respool
        for (const p of ports) this.ports.add(p)
      } catch {
        this.errors++
      } finally {
        this.#busy = null
      }
    })()
    await this.#busy
  }

  /** Stops watching (one last sample first) and says how many connections were open and used. */
  async stop (): Promise<UpstreamUse> {
    clearInterval(this.#timer)
    await this.#poll()
    const after = socketBytesSent(this.admin.port)
    if (this.#before === null || after === null) return { open: this.maxRespool, used: null, sentBytes: [] }
    const sentBytes: number[] = []
    for (const port of this.ports) {
      const end = after.get(port)
      if (end === undefined) continue // closed during the run
      const start = this.#before.get(port)
      const sent = start === undefined ? end - HANDSHAKE_BYTES : end - start
      if (sent > 0) sentBytes.push(sent)
    }
    sentBytes.sort((a, b) => b - a)
    return { open: this.maxRespool, used: sentBytes.length, sentBytes }
  }
}
