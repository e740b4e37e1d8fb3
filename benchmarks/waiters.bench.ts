/**
 * Parked blocking commands: N clients wait in `BLPOP bench:sem:<i> 10`, then a random half is
 * woken by tokens pushed straight to Redis, at a steady rate and as a burst. Direct Redis and
 * `respool --park-blocking yes` at several pool sizes, same run, rounds interleaved with the
 * target order rotated; medians of rounds. The scenario itself is in lib/waiters.ts
 * (proxy.bench.ts runs it too, as scenario w).
 *
 *   npm run bench:waiters                       # build, then node dist/benchmarks/waiters.bench.js
 *   QUICK=1 npm run bench:waiters               # 1,000 waiters, pools 4 and 16, one round
 *   WAITERS=1000 WAITERS_POOLS=8 WAITERS_ROUNDS=1 npm run bench:waiters
 *
 * Output: tables on stdout, progress on stderr, benchmarks/results/waiters-bench-<time>.{json,md}
 * and waiters-latest.*.
 */
import { waitersConfig, scenarioWaiters } from './lib/waiters.js'
import { exitWith, runStandalone } from './lib/standalone.js'

exitWith('waiters', async () => {
  const cfg = waitersConfig(process.env, process.env.QUICK === '1')
  await runStandalone({
    name: 'waiters',
    config: cfg,
    describe: `waiters ${cfg.counts.join(',')}, pools ${cfg.pools.join(',')}, ${cfg.modes.join(' and ')}, ${cfg.rounds} round(s)`,
    maxClients: Math.max(...cfg.counts),
    anomaliesTitle: 'Anomalies (wrong timeouts, missing or wrong replies, tokens left, failed runs, respool log warnings)',
    run: async (redis, admin) => {
      const report = await scenarioWaiters(redis, admin, cfg)
      // The per-run rows (with their samples) and the schedule go into the JSON.
      return { tables: report.tables, anomalies: report.anomalies, data: { rows: report.rows, schedule: report.schedule } }
    }
  })
})
