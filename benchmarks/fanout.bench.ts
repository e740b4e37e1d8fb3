/**
 * Pub/sub fan-out: N subscribers (SUBSCRIBE one of C channels, a share PSUBSCRIBE a pattern of
 * ten channels), one publisher at a fixed rate for a fixed time. Direct Redis and respool
 * (`--shared-pubsub yes`: every subscriber on one upstream subscriber connection) at one or more
 * pool sizes, same run, rounds interleaved with the target order rotated; medians of rounds.
 * The scenario itself is in lib/fanout.ts.
 *
 *   npm run bench:fanout                        # build, then node dist/benchmarks/fanout.bench.js
 *   QUICK=1 npm run bench:fanout                # 1,000 subscribers, 2 s, one round
 *   FANOUT_SUBSCRIBERS=2000 FANOUT_RATE=5000 FANOUT_POOLS=4,8 npm run bench:fanout
 *
 * Output: tables on stdout, progress on stderr, benchmarks/results/fanout-bench-<time>.{json,md}
 * and fanout-latest.*.
 */
import { fanoutConfig, scenarioFanout } from './lib/fanout.js'
import { exitWith, runStandalone } from './lib/standalone.js'

exitWith('fanout', async () => {
  const cfg = fanoutConfig(process.env, process.env.QUICK === '1')
  await runStandalone({
    name: 'fanout',
    config: cfg,
    describe: `${cfg.subscribers} subscribers over ${cfg.channels} channels (every ${cfg.plan.patternEvery || '—'}th on a pattern), ` +
      `${cfg.rate} messages/s for ${cfg.seconds} s, pools ${cfg.pools.join(',')}, ${cfg.rounds} round(s), ${cfg.workers} subscriber process(es)`,
    maxClients: cfg.subscribers,
    anomaliesTitle: 'Anomalies (lost, duplicated, out-of-order or wrong messages, PUBLISH counts, errors, failed runs, respool log warnings)',
    run: async (redis, admin) => {
      const report = await scenarioFanout(redis, admin, cfg)
      // The per-run rows (with their samples) and the schedule go into the JSON.
      return { tables: report.tables, anomalies: report.anomalies, data: { rows: report.rows, schedule: report.schedule } }
    }
  })
})
