/**
 * The parameters of the end-to-end benchmark (proxy.bench.ts), read once from the environment
 * when this module loads (a bad value throws then, before anything starts). The table under
 * "Parameters" in benchmarks/README.md lists them; QUICK=1 and SWEEP=1 change the defaults.
 */
import { neighboursConfig } from './neighbours.js'
import { waitersConfig } from './waiters.js'

const env = process.env
const int = (name: string, def: number): number => {
  const v = env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${v}`)
  return Math.floor(n)
}
const ints = (name: string, def: number[]): number[] => {
  const v = env[name]
  if (v === undefined || v === '') return def
  return v.split(',').map((x) => Number(x.trim())).filter((x) => Number.isFinite(x) && x > 0)
}
/**
 * respool pool sizes: at least 2. One upstream connection cannot carry both shared traffic and a
 * pinned client, so no benchmark runs respool with --pool-size 1.
 */
const MIN_POOL = 2
const checkPools = (name: string, pools: number[]): number[] => {
  const bad = pools.filter((p) => p < MIN_POOL)
  if (bad.length > 0) throw new Error(`${name}: respool needs --pool-size ${MIN_POOL} or more, got ${bad.join(', ')}`)
  return pools
}
const words = (name: string, def: string[]): string[] => {
  const v = env[name]
  if (v === undefined || v === '') return def
  return v.split(',').map((x) => x.trim().toLowerCase()).filter((x) => x !== '')
}

export const QUICK = env.QUICK === '1'
export const FULL_SWEEP = env.SWEEP === '1'
export const ROUNDS = Math.max(1, int('ROUNDS', QUICK ? 1 : 3))
export const REQUESTS = Math.max(1000, int('REQUESTS', QUICK ? 20000 : 100000))
/** Pipelined runs are ~10× faster; they get more requests so they last about as long. */
export const PIPELINED_FACTOR = int('PIPELINED_FACTOR', 4)
export const POOL_SIZE = checkPools('POOL_SIZE', [int('POOL_SIZE', 8)])[0]
export const TW_CONNECTIONS = Math.max(1, int('TW_CONNECTIONS', 1))
export const TW_MATCHED = env.TW_MATCHED !== '0' && !QUICK
export const TESTS = words('TESTS', ['set', 'get'])
export const DATA_SIZE = int('DATA_SIZE', 3)
export const KEYSPACE = int('KEYSPACE', 100000)
/** (a) and (d) also run respool with these Node.js flags (space-separated), in the same rounds. */
export const ALSO_NODE_ARGS = (env.ALSO_NODE_ARGS ?? '').split(' ').filter((x) => x !== '')
/** (a) and (d) also run respool with --workers ALSO_WORKERS, in the same rounds. */
export const ALSO_WORKERS = int('ALSO_WORKERS', 1)
export const SCENARIOS = new Set(words('SCENARIOS', ['a', 'b', 'c', 'd', 'e', 'w', 'n']))
export const BENCH_TIMEOUT_MS = int('BENCH_TIMEOUT_MS', 120000)

/** Scenario (a): CLIENTS × PIPELINE when either is set, else the three standard cases. */
export const A_COMBOS: Array<{ clients: number, pipeline: number }> = env.CLIENTS !== undefined || env.PIPELINE !== undefined
  ? ints('CLIENTS', [50]).flatMap((c) => ints('PIPELINE', [1]).map((p) => ({ clients: c, pipeline: p })))
  : [{ clients: 50, pipeline: 1 }, { clients: 50, pipeline: 16 }, { clients: 500, pipeline: 1 }]

export const SWEEP_CLIENTS = ints('SWEEP_CLIENTS', QUICK ? [100, 1000] : [10, 100, 1000])
export const SWEEP_POOLS = checkPools('SWEEP_POOLS', ints('SWEEP_POOLS', QUICK ? [2, 8, 32] : [2, 4, 8, 16, 32]))
export const SWEEP_PIPELINES = ints('SWEEP_PIPELINES', QUICK ? [1] : [1, 16])
export const SWEEP_ROUNDS = Math.max(1, int('SWEEP_ROUNDS', FULL_SWEEP ? ROUNDS : (QUICK ? 1 : 2)))
export const SWEEP_REQUESTS = Math.max(1000, int('SWEEP_REQUESTS', FULL_SWEEP ? REQUESTS : Math.floor(REQUESTS / 2)))
export const BIG_POOLS = checkPools('BIG_POOLS', ints('BIG_POOLS', [8, 64]))
export const BIG_CLIENTS = int('BIG_CLIENTS', 1000)
/** -P 1 needs a handful of lanes at any pool size; -P 16 keeps enough in flight to open many. */
export const BIG_PIPELINES = ints('BIG_PIPELINES', QUICK ? [1] : [1, 16])

export const PIN_POOLS = checkPools('PIN_POOLS', ints('PIN_POOLS', QUICK ? [4, 64] : [4, 8, 16, 64]))
export const PIN_WORKERS = int('PIN_WORKERS', 50)
export const PIN_PRODUCERS = Math.max(1, int('PIN_PRODUCERS', 4))
export const PIN_TX = int('PIN_TX', 10)
export const PIN_WATCH = int('PIN_WATCH', 10)
export const PIN_RATE = int('PIN_RATE', 4000)
export const PIN_SECONDS = Number(env.PIN_SECONDS ?? (QUICK ? 2 : 4))
export const PIN_ROUNDS = Math.max(1, int('PIN_ROUNDS', QUICK ? 1 : 2))
export const BRPOP_TIMEOUT = int('BRPOP_TIMEOUT', 1)

export const LAT_ROUNDS = Math.max(1, int('LAT_ROUNDS', QUICK ? 1 : 5))
export const LAT_REQUESTS = Math.max(1000, int('LAT_REQUESTS', QUICK ? 5000 : 20000))

export const IDLE_CLIENTS = int('IDLE_CLIENTS', 10000)
export const BIG_VALUE_MB = int('BIG_VALUE_MB', 256)

/** Scenario (w): WAITERS, WAITERS_POOLS, WAITERS_ROUNDS, WAITERS_MODES, WAITERS_RATE, WAITERS_CHUNK, WAITERS_TIMEOUT, WAITERS_SEED. */
export const WAITERS_CONFIG = waitersConfig(env, QUICK)

/** Scenario (n): NEIGH_ROUNDS, NEIGH_BIG_MB, NEIGH_SECONDS, NEIGH_STUCK_*, NEIGH_SLOW_KBPS, NEIGH_KILL_MB, NEIGH_PHASES (lib/neighbours.ts). */
export const NEIGH_CONFIG = neighboursConfig(env, QUICK, POOL_SIZE, TW_CONNECTIONS)

/** At least MIN_PER_CLIENT requests per client, so 1000-client runs measure requests, not connection setup. */
export const MIN_PER_CLIENT = int('MIN_PER_CLIENT', 100)
export const requestsFor = (pipeline: number, base: number, clients: number): number =>
  Math.max(clients * MIN_PER_CLIENT * (pipeline > 1 ? pipeline : 1), pipeline > 1 ? base * PIPELINED_FACTOR : base)

/** The parameters as the results JSON records them (its `config` key). */
export function paramsRecord (): Record<string, unknown> {
  return {
    QUICK, SWEEP: FULL_SWEEP, ROUNDS, REQUESTS, PIPELINED_FACTOR, POOL_SIZE, TW_CONNECTIONS, TW_MATCHED, TESTS, DATA_SIZE, KEYSPACE, SCENARIOS: [...SCENARIOS],
    A_COMBOS, SWEEP_CLIENTS, SWEEP_POOLS, SWEEP_PIPELINES, SWEEP_ROUNDS, SWEEP_REQUESTS, BIG_POOLS, BIG_CLIENTS, BIG_PIPELINES,
    PIN_POOLS, PIN_WORKERS, PIN_PRODUCERS, PIN_TX, PIN_RATE, PIN_SECONDS, PIN_ROUNDS, BRPOP_TIMEOUT, LAT_ROUNDS, LAT_REQUESTS, IDLE_CLIENTS, BIG_VALUE_MB,
    WAITERS: WAITERS_CONFIG,
    NEIGHBOURS: NEIGH_CONFIG
  }
}
