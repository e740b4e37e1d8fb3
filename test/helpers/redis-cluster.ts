import { Redis } from 'ioredis'
import { setTimeout as delay } from 'node:timers/promises'
import { startRedis, type RedisServer } from './redis-server.js'
import { runProgram } from './run-program.js'

export interface ClusterNodeHandle {
  server: RedisServer
  port: number
  id: string
  /** A plain (non-cluster) client to this node. */
  client: Redis
}

export interface RedisCluster {
  nodes: ClusterNodeHandle[]
  /** The node serving `slot` now (asked of the first node). */
  ownerOf (slot: number): Promise<ClusterNodeHandle>
  stop (): Promise<void>
}

/**
 * A Redis Cluster of `masters` masters (no replicas) on free loopback ports, its 16384 slots
 * split evenly, made by hand (CLUSTER ADDSLOTSRANGE and MEET), which is faster than
 * `redis-cli --cluster create`. Resolves once every node reports cluster_state:ok and knows
 * every other node's slots.
 */
export async function startRedisCluster (masters = 3): Promise<RedisCluster> {
  const servers = await Promise.all(Array.from({ length: masters }, async () => await startRedis([
    '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'
  ])))
  const nodes: ClusterNodeHandle[] = []
  for (const server of servers) {
    const client = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: false })
    const id = String(await client.call('CLUSTER', 'MYID'))
    nodes.push({ server, port: server.port, id, client })
  }
  const per = Math.ceil(16384 / masters)
  await Promise.all(nodes.map(async (node, i) => {
    await node.client.call('CLUSTER', 'ADDSLOTSRANGE', String(i * per), String(Math.min(16383, (i + 1) * per - 1)))
  }))
  for (const node of nodes.slice(1)) await node.client.call('CLUSTER', 'MEET', '127.0.0.1', String(nodes[0].port))
  const deadline = Date.now() + 20_000
  for (;;) {
    const states = await Promise.all(nodes.map(async (n) => {
      const info = String(await n.client.call('CLUSTER', 'INFO'))
      const slots = await n.client.call('CLUSTER', 'SLOTS') as unknown[]
      return /cluster_state:ok/.test(info) && slots.length === masters
    }))
    if (states.every(Boolean)) break
    if (Date.now() > deadline) throw new Error('the test cluster did not become ready')
    await delay(100)
  }
  const byPort = new Map(nodes.map((n) => [n.port, n]))
  return {
    nodes,
    async ownerOf (slot: number) {
      const ranges = await nodes[0].client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
      const range = ranges.find(([start, end]) => slot >= start && slot <= end)
      const node = range !== undefined ? byPort.get(Number(range[2][1])) : undefined
      if (node === undefined) throw new Error(`no owner for slot ${slot}`)
      return node
    },
    async stop () {
      for (const node of nodes) node.client.disconnect()
      await Promise.all(servers.map(async (s) => { await s.stop() }))
    }
  }
}

/**
 * Moves `slot` (with its keys) from its owner to `to`, as redis-cli --cluster reshard does:
 * IMPORTING on the target, MIGRATING on the source, MIGRATE the keys, then SETSLOT NODE on
 * every node. `between` runs while the slot is half-moved (the ASK window).
 */
export async function moveSlot (cluster: RedisCluster, slot: number, to: ClusterNodeHandle, between?: () => Promise<void>): Promise<void> {
  const from = await cluster.ownerOf(slot)
  if (from === to) return
  await to.client.call('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', from.id)
  await from.client.call('CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', to.id)
  if (between !== undefined) await between()
  for (;;) {
    const keys = await from.client.call('CLUSTER', 'GETKEYSINSLOT', String(slot), '100') as string[]
    if (keys.length === 0) break
    await from.client.call('MIGRATE', '127.0.0.1', String(to.port), '', '0', '5000', 'KEYS', ...keys)
  }
  await to.client.call('CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id)
  await from.client.call('CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id)
  for (const node of cluster.nodes) if (node !== to && node !== from) await node.client.call('CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id)
}

export interface ReplicatedCluster {
  /** Every node, masters and replicas (the roles change with failovers). */
  nodes: ClusterNodeHandle[]
  /** A seed address list for respool (`127.0.0.1:port` of every node). */
  seeds: string[]
  /** The master serving `slot` now, as the first live node sees it. */
  ownerOf (slot: number): Promise<ClusterNodeHandle>
  /** The masters serving slots now, in the order of their lowest slot. */
  masters (): Promise<ClusterNodeHandle[]>
  /** A replica of `master` that is connected to it (link up). */
  replicaOf (master: ClusterNodeHandle): Promise<ClusterNodeHandle>
  /** Resolves once every live node reports cluster_state:ok and agrees on the slot owners. */
  settled (timeoutMs?: number): Promise<void>
  /** Kills a node with SIGKILL (its client is disconnected first). */
  kill (node: ClusterNodeHandle): Promise<void>
  stop (): Promise<void>
}

/**
 * A Redis Cluster with replicas, made the way an operator makes one: `redis-cli --cluster create
 * … --cluster-replicas n --cluster-yes`. Short timeouts so failovers and the start are quick
 * (node timeout 1000 ms, diskless sync without delay, no persistence). Resolves once every node
 * is ok, agrees on the slot map, and every replica's link to its master is up.
 */
export async function startReplicatedCluster (masters = 3, replicasPerMaster = 1): Promise<ReplicatedCluster> {
  const servers = await Promise.all(Array.from({ length: masters * (1 + replicasPerMaster) }, async () => await startRedis([
    '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '1000',
    '--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0', '--cluster-replica-validity-factor', '0'
  ])))
  const nodes: ClusterNodeHandle[] = await Promise.all(servers.map(async (server) => {
    const client = new Redis({ port: server.port, host: '127.0.0.1', maxRetriesPerRequest: 1 })
    client.on('error', () => {}) // a killed node's client must not crash the test
    return { server, port: server.port, id: String(await client.call('CLUSTER', 'MYID')), client }
  }))
  const seeds = nodes.map((n) => `127.0.0.1:${n.port}`)
  const created = await runProgram('redis-cli', ['--cluster', 'create', ...seeds, '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], { timeoutMs: 30_000 })
  if (created.code !== 0) {
    await Promise.all(servers.map(async (s) => { await s.stop() }))
    throw new Error(`redis-cli --cluster create failed: ${created.stdout.toString()} ${created.stderr}`)
  }
  const dead = new Set<ClusterNodeHandle>()
  const live = (): ClusterNodeHandle[] => nodes.filter((n) => !dead.has(n))
  const byPort = new Map(nodes.map((n) => [n.port, n]))
  const slotRanges = async (node: ClusterNodeHandle): Promise<Array<[number, number, ClusterNodeHandle]>> => {
    const ranges = await node.client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
    return ranges.map(([start, end, master]) => [Number(start), Number(end), byPort.get(Number(master[1])) as ClusterNodeHandle])
  }
  const cluster: ReplicatedCluster = {
    nodes,
    seeds,
    async ownerOf (slot) {
      const range = (await slotRanges(live()[0])).find(([start, end]) => slot >= start && slot <= end)
      if (range === undefined) throw new Error(`no owner for slot ${slot}`)
      return range[2]
    },
    async masters () {
      const out: ClusterNodeHandle[] = []
      for (const [, , node] of (await slotRanges(live()[0])).sort((a, b) => a[0] - b[0])) if (!out.includes(node)) out.push(node)
      return out
    },
    async replicaOf (master) {
      for (const node of live()) {
        if (node === master) continue
        const info = String(await node.client.info('replication'))
        if (/role:slave/.test(info) && new RegExp(`master_port:${master.port}\\r\\n`).test(info) && /master_link_status:up/.test(info)) return node
      }
      throw new Error(`no replica of ${master.port} with its link up`)
    },
    async settled (timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const views = await Promise.all(live().map(async (n) => {
          const info = String(await n.client.call('CLUSTER', 'INFO'))
          const ranges = (await slotRanges(n)).map(([s, e, m]) => `${s}-${e}:${m.port}`).sort().join(',')
          return /cluster_state:ok/.test(info) ? ranges : null
        })).catch(() => [null])
        if (views.every((v) => v !== null && v === views[0])) {
          // Every replica's link to its master is up (a failover needs a synced replica).
          const replicaInfos = await Promise.all(live().map(async (n) => String(await n.client.info('replication'))))
          if (replicaInfos.every((i) => !/role:slave/.test(i) || /master_link_status:up/.test(i))) return
        }
        if (Date.now() > deadline) {
          const states = await Promise.all(live().map(async (n) => `${n.port}: ${/cluster_state:\w+/.exec(String(await n.client.call('CLUSTER', 'INFO').catch(() => '')))?.[0] ?? '?'} ${/role:\w+/.exec(String(await n.client.info('replication').catch(() => '')))?.[0] ?? '?'} ${/master_link_status:\w+/.exec(String(await n.client.info('replication').catch(() => '')))?.[0] ?? ''}`))
          throw new Error(`the test cluster did not settle in ${timeoutMs} ms: ${states.join('; ')}`)
        }
        await delay(50)
      }
    },
    async kill (node) {
      dead.add(node)
      node.client.disconnect()
      await node.server.kill()
    },
    async stop () {
      for (const node of nodes) node.client.disconnect()
      await Promise.all(servers.map(async (s) => { await s.stop() }))
    }
  }
  await cluster.settled()
  return cluster
}
