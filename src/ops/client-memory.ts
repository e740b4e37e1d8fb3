import { readFileSync } from 'node:fs'

/**
 * One budget for every byte respool holds for its clients (replies not yet written to them), in
 * the spirit of Redis's `maxmemory-clients`. A sidecar usually runs under a memory limit far
 * below Redis's; without a total bound, a few clients that stop reading would have it killed
 * for memory and every client of the application would lose its connection at once.
 *
 * Sessions report what they hold when it changes; the running total may overstate (a socket
 * drains without telling), so before anyone is disconnected the total is counted again
 * exactly. Over the budget, the client holding the most is disconnected, then the next, until
 * the total fits.
 */
export interface BufferedClient {
  readonly id: number
  /** Bytes held for this client now (reply data not yet taken by its socket or the kernel). */
  bufferedBytes (): number
  /** Disconnects the client: it held `bytes` when the budget ran out. */
  evictForMemory (bytes: number): void
}

export class ClientMemoryBudget {
  readonly #reported = new Map<BufferedClient, number>()
  #total = 0
  evictions = 0

  /** `limit` in bytes; 0 means no budget. */
  constructor (public limit: number, private readonly onEvict: (client: BufferedClient, bytes: number) => void = () => {}) {}

  /** The running total (may overstate until the next exact count). */
  get total (): number {
    return this.#total
  }

  /** The client now holds `bytes`. */
  report (client: BufferedClient, bytes: number): void {
    const before = this.#reported.get(client) ?? 0
    if (bytes === before) return
    if (bytes === 0) this.#reported.delete(client)
    else this.#reported.set(client, bytes)
    this.#total += bytes - before
    if (this.limit > 0 && this.#total > this.limit) this.enforce()
  }

  /** Clients that hold more than a trifle (those that reported). */
  holders (): BufferedClient[] {
    return [...this.#reported.keys()]
  }

  /** The client is gone. */
  forget (client: BufferedClient): void {
    this.#total -= this.#reported.get(client) ?? 0
    this.#reported.delete(client)
  }

  /** Counts again exactly; returns the biggest holder and the total. */
  recount (): { total: number, biggest: BufferedClient | null, biggestBytes: number } {
    let total = 0
    let biggest: BufferedClient | null = null
    let biggestBytes = 0
    for (const client of [...this.#reported.keys()]) {
      const bytes = client.bufferedBytes()
      if (bytes === 0) this.#reported.delete(client)
      else this.#reported.set(client, bytes)
      total += bytes
      if (bytes > biggestBytes) {
        biggest = client
        biggestBytes = bytes
      }
    }
    this.#total = total
    return { total, biggest, biggestBytes }
  }

  /** Disconnects the biggest holders until the total fits the budget. */
  enforce (): void {
    for (;;) {
      const { total, biggest, biggestBytes } = this.recount()
      if (total <= this.limit || biggest === null) return
      this.evictions++
      this.forget(biggest)
      this.onEvict(biggest, biggestBytes)
      biggest.evictForMemory(biggestBytes)
    }
  }
}

/** The default budget: half the container's memory limit when there is one, at most 256 MB. */
export function defaultClientMemoryBudget (): number {
  const cap = 256 * 1024 * 1024
  const limit = cgroupMemoryLimit()
  return limit === null ? cap : Math.min(cap, Math.floor(limit / 2))
}

function cgroupMemoryLimit (): number | null {
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const text = readFileSync(file, 'utf8').trim()
      if (text === 'max') return null
      const bytes = Number(text)
      // cgroup v1 reports "no limit" as a number near 2^63.
      if (Number.isFinite(bytes) && bytes > 0 && bytes < 2 ** 60) return bytes
      return null
    } catch {
      // not this cgroup version
    }
  }
  return null
}
