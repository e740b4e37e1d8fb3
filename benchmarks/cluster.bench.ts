/**
 * respool in front of a 3-master Redis Cluster, against ioredis's Cluster client connecting
 * directly (the baseline an application has without respool), with one load generator for both
 * at -P 1 and -P 16, redis-benchmark (respool vs. redis-benchmark --cluster), the upstream
 * connections each node holds, and a resharding under load. The scenario is in
 * lib/cluster-bench.ts.
 *
 *   npm run bench:cluster                        # build, then node dist/benchmarks/cluster.bench.js
 *   QUICK=1 npm run bench:cluster                # one round, 2 s runs
 *   CLUSTER_ROUNDS=5 CLUSTER_CLIENTS=100 CLUSTER_DEPTHS=1,8,32 CLUSTER_RESHARD_SLOTS=2000 npm run bench:cluster
 *
 * Output: tables on stdout, progress on stderr, benchmarks/results/cluster-bench-<time>.{json,md}
 * and cluster-latest.*.
 */
import { clusterBenchConfig, scenarioCluster } from './lib/cluster-bench.js'
import { exitWith, runStandalone } from './lib/standalone.js'

exitWith('cluster', async () => {
  const cfg = clusterBenchConfig(process.env, process.env.QUICK === '1')
  await runStandalone({
    name: 'cluster',
    config: cfg,
    describe: `3-master cluster, ${cfg.clients} clients, -P ${cfg.depths.join(' and -P ')}, ${cfg.seconds} s runs, resharding of ${cfg.reshardSlots} slots, ${cfg.rounds} round(s)`,
    maxClients: 1000,
    anomaliesTitle: 'Anomalies (client-visible errors, redis-benchmark notes)',
    run: async () => {
      const report = await scenarioCluster(cfg)
      return { tables: report.tables, anomalies: report.anomalies, data: { rows: report.rows, reshards: report.reshards } }
    }
  })
})
