import { validateConfig, type ProxyConfig, type ProxyOptions } from '../config.js'
import { ConfigError } from '../errors.js'

/** What one worker process may use of the configured totals. */
export interface WorkerShare {
  poolSize: number
  minIdle: number
  /** Undefined when --max-pins was not given: each worker then takes its own default (its pool size - 1). */
  maxPins: number | undefined
  maxClients: number
  /** 0 = no budget, for every worker alike. */
  maxMemoryClients: number
}

/** Worker `index` of `count`'s part of `total`: the remainder goes one each to the first workers. */
export function shareOf (total: number, index: number, count: number): number {
  return Math.floor(total / count) + (index < total % count ? 1 : 0)
}

/**
 * Splits the bounds of a validated configuration between `count` workers so that their sums are
 * the configured totals: the upstream bound holds across processes. Throws ConfigError when a
 * worker would get less than one process needs (two connections: one shared, one to pin).
 */
export function workerShares (config: ProxyConfig, count: number, maxPinsGiven: boolean): WorkerShare[] {
  const fewer = `, or fewer --workers (${count} now)`
  if (config.poolSize < 2 * count) {
    throw new ConfigError(`pool-size: ${config.poolSize} is too small for ${count} workers: each worker needs at least 2 upstream connections of its own (one for shared traffic, one to pin), so --pool-size ${2 * count} at least${fewer}`)
  }
  if (maxPinsGiven && (config.maxPins < count || config.maxPins > config.poolSize - count)) {
    throw new ConfigError(`max-pins: with ${count} workers it must be from ${count} to ${config.poolSize - count} (pool-size - workers: each worker keeps one connection of its share for shared traffic, and needs one pin), got ${config.maxPins}`)
  }
  if (config.maxClients < count) {
    throw new ConfigError(`max-clients: ${config.maxClients} is too small for ${count} workers: each needs at least 1${fewer}`)
  }
  if (config.maxMemoryClients > 0 && config.maxMemoryClients < count) {
    throw new ConfigError(`maxmemory-clients: ${config.maxMemoryClients} bytes cannot be split between ${count} workers${fewer}`)
  }
  return Array.from({ length: count }, (_, i) => ({
    poolSize: shareOf(config.poolSize, i, count),
    // minIdle <= poolSize, and shares keep that order (the remainders go to the same workers first).
    minIdle: shareOf(config.minIdle, i, count),
    maxPins: maxPinsGiven ? shareOf(config.maxPins, i, count) : undefined,
    maxClients: shareOf(config.maxClients, i, count),
    maxMemoryClients: shareOf(config.maxMemoryClients, i, count)
  }))
}

/**
 * The configuration worker `index` of the `count` running runs with: the totals checked and
 * split, everything else as configured. Used at start and for every reload, so a reload splits
 * the new totals the same way. The split is by the workers that run, not by a `workers` read
 * again from the configuration: that takes a restart, and splitting by it while the old number
 * of workers still runs would let their shares add up to more than --pool-size.
 */
export function workerConfig (options: ProxyOptions, index: number, count: number): ProxyConfig {
  const total = validateConfig(options)
  const share = workerShares(total, count, options.maxPins !== undefined)[index]
  if (share === undefined) throw new ConfigError(`workers: no worker ${index} among ${count}`)
  return validateConfig({ ...total, ...share } as unknown as ProxyOptions)
}

/** Checks that the totals can be split (the primary does this before it forks anything). */
export function checkWorkerShares (options: ProxyOptions): ProxyConfig {
  const total = validateConfig(options)
  if (total.workers > 1) workerShares(total, total.workers, options.maxPins !== undefined)
  return total
}
