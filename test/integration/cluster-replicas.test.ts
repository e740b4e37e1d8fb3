import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import calculateSlot from 'cluster-key-slot'
import { startReplicatedCluster, type ClusterNodeHandle, type ReplicatedCluster } from '../helpers/redis-cluster.js'
import { startProxy } from '../helpers/proxy.js'
import { runProgram, runScript } from '../helpers/run-program.js'
import { startLoad } from '../helpers/cluster-load.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// A 3-master, 3-replica cluster made with redis-cli --cluster create, shared by the tests of
// this file in order: real clients, a hand-made migration, a resharding, a manual failover, and
// last the kill -9 of a master (after which the cluster has one node less).
let cluster: ReplicatedCluster
let proxy: ProxyServer
let reader: Redis
before(async () => {
  cluster = await startReplicatedCluster(3, 1)
  proxy = await startProxy({ cluster: cluster.seeds, poolSize: 8 })
  reader = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
})
after(async () => {
  reader?.disconnect()
  await proxy?.destroy()
  await cluster?.stop()
})

test('redis-py, redis-rb and ioredis (non-cluster mode) through respool: pipelines spanning every master come back in order', { timeout: 60_000 }, async () => {
  const masters = await cluster.masters()
  const spread = await Promise.all(Array.from({ length: 30 }, async (_, i) => (await cluster.ownerOf(calculateSlot(`py:${i}`))).port))
  assert.equal(new Set(spread).size, masters.length, 'the keys cover every master')
  const python = await runScript('/usr/bin/python3', ['-', String(proxy.address.port)], `
import sys, json, redis
r = redis.Redis(host='127.0.0.1', port=int(sys.argv[1]), decode_responses=True, socket_timeout=20)
r.flushall()
p = r.pipeline(transaction=False)
for i in range(300):
    p.set('py:%d' % i, i)
    p.incrby('py:%d' % i, 1)
    p.get('py:%d' % i)
res = p.execute()
ok = all(res[3*i] is True and res[3*i+1] == i + 1 and res[3*i+2] == str(i + 1) for i in range(300))
print(json.dumps({
  'pipeline': ok,
  'dbsize': r.dbsize(),
  'scan': len(set(r.scan_iter(match='py:*', count=17))),
  'keys': len(r.keys('py:*')),
  'mget': r.mget('py:1', 'nope', 'py:299'),
  'delete': r.delete('py:1', 'py:2', 'nope'),
  'sha_eval': r.evalsha(r.script_load('return redis.call("GET", KEYS[1])'), 1, 'py:7'),
  'randomkey': r.randomkey() is not None,
}, sort_keys=True))
`)
  assert.deepEqual(JSON.parse(python[0]), { pipeline: true, dbsize: 300, scan: 300, keys: 300, mget: ['2', null, '300'], delete: 2, sha_eval: '8', randomkey: true })
  const ruby = await runScript('ruby', ['-', String(proxy.address.port)], `
require 'redis'
require 'json'
r = Redis.new(host: '127.0.0.1', port: ARGV[0].to_i, timeout: 20)
res = r.pipelined do |p|
  300.times { |i| p.set("rb:#{i}", i); p.incr("rb:#{i}"); p.get("rb:#{i}") }
end
ok = (0...300).all? { |i| res[3*i] == 'OK' && res[3*i+1] == i + 1 && res[3*i+2] == (i + 1).to_s }
keys = []
cursor = '0'
loop do
  cursor, batch = r.scan(cursor, match: 'rb:*', count: 23)
  keys.concat(batch)
  break if cursor == '0'
end
puts JSON.generate({ 'pipeline' => ok, 'dbsize' => r.dbsize, 'scan' => keys.size, 'unique' => keys.uniq.size, 'mget' => r.mget('rb:1', 'nope', 'rb:299'), 'flushdb' => r.flushdb, 'after' => r.dbsize })
`)
  assert.deepEqual(JSON.parse(ruby[0]), { pipeline: true, dbsize: 598, scan: 300, unique: 300, mget: ['2', null, '300'], flushdb: 'OK', after: 0 })
  const io = new Redis({ port: proxy.address.port, host: '127.0.0.1' })
  try {
    const pipeline = io.pipeline()
    for (let i = 0; i < 300; i++) pipeline.set(`io:${i}`, String(i)).incr(`io:${i}`).get(`io:${i}`)
    const results = await pipeline.exec()
    assert.ok(results !== null)
    results.forEach(([err, value], n) => {
      const i = Math.floor(n / 3)
      assert.equal(err, null)
      assert.equal(value, [`OK`, i + 1, String(i + 1)][n % 3])
    })
    const scanned = new Set<string>()
    await new Promise<void>((resolve, reject) => {
      io.scanStream({ match: 'io:*', count: 29 }).on('data', (keys: string[]) => { for (const k of keys) scanned.add(k) }).on('end', resolve).on('error', reject)
    })
    assert.equal(scanned.size, 300)
    assert.equal(await io.dbsize(), 300)
  } finally {
    io.disconnect()
  }
})

/** Keys of one slot (a hash tag), on one master. */
function tagged (tag: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `{${tag}}:${i}`)
}

test('a slot half-migrated by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE): ASK and TRYAGAIN stay inside respool', { timeout: 30_000 }, async () => {
  const tag = 'mig'
  const slot = calculateSlot(tag)
  const keys = tagged(tag, 10)
  await reader.mset(...keys.flatMap((k) => [k, `v-${k}`]))
  const from = await cluster.ownerOf(slot)
  const masters = await cluster.masters()
  const to = masters[(masters.indexOf(from) + 1) % masters.length]
  await to.client.call('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', from.id)
  await from.client.call('CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', to.id)
  await from.client.call('MIGRATE', '127.0.0.1', String(to.port), '', '0', '5000', 'KEYS', ...keys.slice(0, 5))
  const redirectsBefore = proxy.cluster?.redirects ?? 0
  const retriesBefore = proxy.cluster?.retries ?? 0
  // What the nodes answer a client that follows no redirect.
  const raw = new FrameReader(await RawClient.connect(from.port))
  raw.client.write(Buffer.concat([cmd('GET', keys[0]), cmd('MGET', keys[0], keys[9])]))
  assert.match(await raw.next(), /^-ASK \d+ 127\.0\.0\.1:\d+\r\n$/)
  assert.equal(await raw.next(), '-TRYAGAIN Multiple keys request during rehashing of slot\r\n')
  raw.client.socket.destroy()
  // Through respool: the moved keys are read via ASK, the half-moved MGET is retried until the slot is done.
  assert.equal(await reader.get(keys[0]), `v-${keys[0]}`)
  assert.equal(await reader.get(keys[9]), `v-${keys[9]}`)
  assert.equal(await reader.set(`{${tag}}:new`, 'fresh'), 'OK')
  const straddling = reader.mget(keys[0], keys[9])
  await new Promise((resolve) => setTimeout(resolve, 300))
  await from.client.call('MIGRATE', '127.0.0.1', String(to.port), '', '0', '5000', 'KEYS', ...keys.slice(5))
  for (const node of [to, from, ...masters.filter((m) => m !== to && m !== from)]) await node.client.call('CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id)
  assert.deepEqual(await straddling, [`v-${keys[0]}`, `v-${keys[9]}`])
  assert.deepEqual(await reader.mget(...keys), keys.map((k) => `v-${k}`))
  assert.equal(await reader.get(`{${tag}}:new`), 'fresh')
  assert.ok((proxy.cluster?.redirects ?? 0) > redirectsBefore, 'respool followed ASK')
  assert.ok((proxy.cluster?.retries ?? 0) > retriesBefore, 'respool retried after TRYAGAIN')
  await cluster.settled()
})

test('redis-cli --cluster reshard of half of one master\'s slots (2731) under load from four clients: no client sees an error; the data checks out', { timeout: 60_000 }, async () => {
  await reader.flushall()
  // Data in the slots that move, besides what the load writes.
  const preload = Array.from({ length: 3000 }, (_, i) => `pre:${i}`)
  for (let i = 0; i < preload.length; i += 500) await reader.mset(...preload.slice(i, i + 500).flatMap((k) => [k, k]))
  const [first, second] = await cluster.masters()
  const load = startLoad(proxy.address.port)
  await waitFor(() => load.rounds > 100, 'the load runs')
  const started = performance.now()
  const reshard = await runProgram('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${first.port}`, '--cluster-from', first.id, '--cluster-to', second.id,
    '--cluster-slots', '2731', '--cluster-yes', '--cluster-pipeline', '50'], { timeoutMs: 45_000 })
  const tookMs = performance.now() - started
  const roundsDuring = load.rounds
  await waitFor(() => load.rounds > roundsDuring + 100, 'the load runs on after the resharding')
  const errors = await load.stop()
  assert.equal(reshard.code, 0, reshard.stderr + reshard.stdout.toString().slice(-500))
  assert.deepEqual(errors, [])
  assert.equal((await cluster.masters()).length, 3)
  console.log(`reshard of 2731 slots: ${Math.round(tookMs)} ms, ${load.rounds} rounds of load`)
  await load.check(reader)
  assert.deepEqual(await reader.mget(...preload), preload)
  assert.equal(await reader.dbsize(), await sumDbsize(await cluster.masters()))
  await cluster.settled()
})

async function sumDbsize (masters: ClusterNodeHandle[]): Promise<number> {
  let sum = 0
  for (const m of masters) sum += await m.client.dbsize()
  return sum
}

/**
 * Runs `failover` under load and returns the errors, with the moment respool's slot map first
 * named `replica` as the master of `slot`.
 */
async function underLoadUntilPromoted (slot: number, replica: ClusterNodeHandle, failover: () => Promise<void>): Promise<{ errors: Array<{ sentAt: number, message: string }>, knownAt: number }> {
  const load = startLoad(proxy.address.port)
  let knownAt = Infinity
  const watch = setInterval(() => {
    if (knownAt === Infinity && proxy.cluster?.topology.nodeFor(slot)?.port === replica.port) knownAt = performance.now()
  }, 5)
  try {
    await waitFor(() => load.rounds > 100, 'the load runs')
    await failover()
    await waitFor(() => knownAt < Infinity, 'respool learns the new master', 15_000)
    const rounds = load.rounds
    await waitFor(() => load.rounds > rounds + 200, 'writes go on after the failover', 10_000)
  } catch (err) {
    // A failed step must not leave the load running (the test file would never end). What the
    // clients saw, and where respool sends the slot, say why it failed.
    const seen = await load.stop().catch(() => [])
    const node = proxy.cluster?.topology.nodeFor(slot)
    throw new Error(`${(err as Error).message}; respool sends slot ${slot} to ${String(node?.port)} (replica ${replica.port}); ` +
      `${seen.length} load errors, the last: ${JSON.stringify(seen.slice(-5).map((e) => e.message))}`)
  } finally {
    clearInterval(watch)
  }
  const errors = await load.stop()
  await load.check(reader).catch((err: Error) => { throw new Error(`data after the failover: ${err.message}`) })
  return { errors, knownAt }
}

test('CLUSTER FAILOVER on a replica under load: no client sees an error, writes go on on the new master, EVALSHA of a script loaded before works there', { timeout: 90_000 }, async () => {
  await reader.flushall()
  const [master] = await cluster.masters()
  const replica = await cluster.replicaOf(master)
  const slot = (await firstSlotOf(master))
  // A script loaded through respool before the failover (Redis 7 does not replicate SCRIPT LOAD).
  const sha = String(await reader.script('LOAD', 'return redis.call("INCR", KEYS[1])'))
  const { errors } = await underLoadUntilPromoted(slot, replica, async () => {
    assert.equal(await replica.client.call('CLUSTER', 'FAILOVER'), 'OK')
  })
  assert.deepEqual(errors, [])
  // The demoted master resyncs from the new one before the cluster counts as settled: on a
  // loaded 2-core machine that has taken more than 20 s.
  await cluster.settled(45_000)
  assert.ok((await cluster.masters()).includes(replica))
  // EVALSHA for a key of the promoted replica works: respool loads the script there on NOSCRIPT.
  let key = 'sha:0'
  for (let i = 1; (await cluster.ownerOf(calculateSlot(key))) !== replica; i++) key = `sha:${i}`
  assert.deepEqual(await replica.client.call('SCRIPT', 'EXISTS', sha), [0], 'the new master never saw the script')
  assert.equal(await reader.evalsha(sha, 1, key), 1)
  assert.equal(await reader.evalsha(sha, 1, key), 2)
})

async function firstSlotOf (master: ClusterNodeHandle): Promise<number> {
  const ranges = await master.client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
  return Math.min(...ranges.filter(([, , m]) => Number(m[1]) === master.port).map(([start]) => Number(start)))
}

test('kill -9 of a master under load: errors only while it fails over, none once respool knows the new master; no redirect loop', { timeout: 90_000 }, async () => {
  await reader.flushall()
  const masters = await cluster.masters()
  const victim = masters[1]
  const replica = await cluster.replicaOf(victim)
  const slot = await firstSlotOf(victim)
  let killedAt = 0
  const { errors, knownAt } = await underLoadUntilPromoted(slot, replica, async () => {
    killedAt = performance.now()
    await cluster.kill(victim)
  })
  const late = errors.filter((e) => e.sentAt > knownAt)
  assert.deepEqual(late, [], 'no error for a command sent after respool knew the new master')
  assert.ok(errors.every((e) => e.sentAt >= killedAt - 50), 'no error before the kill')
  assert.ok(!errors.some((e) => /redirection/.test(e.message)), 'no redirect loop')
  console.log(`kill -9: ${errors.length} errors in a ${Math.round(knownAt - killedAt)} ms failover window: ${[...new Set(errors.map((e) => e.message))].join(' | ')}`)
  await cluster.settled(45_000)
  assert.equal(await reader.set('after:kill', 'v'), 'OK')
  assert.equal(await reader.get('after:kill'), 'v')
})
