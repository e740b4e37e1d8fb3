import { Redis } from 'ioredis'
import { setTimeout as delay } from 'node:timers/promises'
import { startRedis, type RedisServer } from './redis-server.js'

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
