import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import calculateSlot from 'cluster-key-slot'
import { startRedisCluster, type RedisCluster, type ClusterNodeHandle } from '../helpers/redis-cluster.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * A runaway script in cluster mode: its master answers -BUSY to everything but SCRIPT KILL /
 * FUNCTION KILL. Through respool the kill must reach that master at once (not behind the script
 * on the shared lane), the script's client must get Redis's own error, clients of the other
 * masters must be served throughout, and each reply must be what the owner answers directly,
 * except one: a command for the busy master waits behind the script on its shared lane (one per
 * master) instead of getting -BUSY, and is answered once the script is killed.
 */

const LIBRARY = "#!lua name=busylib\nredis.register_function('spin', function() while true do end end)"
const KEY = 'busy:{k}'
let cluster: RedisCluster
let proxy: ProxyServer
let owner: ClusterNodeHandle
let otherKey: string

before(async () => {
  cluster = await startRedisCluster(3)
  for (const node of cluster.nodes) await node.client.call('CONFIG', 'SET', 'lua-time-limit', '10')
  owner = await cluster.ownerOf(calculateSlot(KEY))
  // A key on another master: its client must not notice the busy one.
  for (let i = 0; ; i++) {
    if ((await cluster.ownerOf(calculateSlot(`by:${i}`))).port !== owner.port) {
      otherKey = `by:${i}`
      break
    }
  }
  proxy = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: 8, acquireTimeoutMs: 5000 })
  const setup = await RawClient.connect(proxy.address.port)
  setup.write(cmd('FUNCTION', 'LOAD', 'REPLACE', LIBRARY))
  assert.equal(await new FrameReader(setup).next(5000), '$7\r\nbusylib\r\n')
  setup.close()
})
after(async () => {
  await proxy?.destroy()
  await cluster?.stop()
})

async function busyScenario (port: number, start: Buffer, kill: Buffer): Promise<{ running: string, busy: string, killed: string, after: string, killMs: number }> {
  const runner = await RawClient.connect(port)
  const runnerFrames = new FrameReader(runner)
  runner.write(start)
  // Busy once the owner says so (lua-time-limit is 10 ms): a direct probe sees -BUSY.
  const probe = await RawClient.connect(owner.port)
  const probeFrames = new FrameReader(probe)
  for (let i = 0; i < 500; i++) {
    probe.write(cmd('PING'))
    if ((await probeFrames.next(5000)).startsWith('-BUSY')) break
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  probe.close()
  // Directly, a command for the busy master is answered -BUSY at once. Through respool it goes on
  // the shared lane to that master, behind the script: it is answered once the script ends.
  const other = await RawClient.connect(port)
  const otherFrames = new FrameReader(other)
  other.write(cmd('GET', KEY))
  const busyReply = otherFrames.next(5000)
  if (port === owner.port) await busyReply
  const killer = await RawClient.connect(port)
  const started = Date.now()
  killer.write(kill)
  const killed = await new FrameReader(killer).next(5000)
  const killMs = Date.now() - started
  const running = await runnerFrames.next(5000)
  const busy = await busyReply
  other.write(cmd('GET', KEY))
  const afterKill = await otherFrames.next(5000)
  for (const c of [runner, other, killer]) c.close()
  return { running, busy, killed, after: afterKill, killMs }
}

test('cluster mode: SCRIPT KILL and FUNCTION KILL reach the busy master at once; the script\'s client gets the master\'s own error, a command held behind it its reply; other masters serve throughout', { timeout: 60000 }, async (t) => {
  // A client of another master pipelines SET/GET throughout, every reply checked.
  const bystander = await RawClient.connect(proxy.address.port)
  after(() => { bystander.close() })
  const bystanderFrames = new FrameReader(bystander)
  let running = true
  let rounds = 0
  const load = (async () => {
    for (let n = 0; running; n++) {
      bystander.write(Buffer.concat([cmd('SET', otherKey, String(n)), cmd('GET', otherKey)]))
      assert.deepEqual(await bystanderFrames.take(2, 5000), ['+OK\r\n', `$${String(n).length}\r\n${n}\r\n`])
      rounds++
    }
  })()
  try {
    for (const [name, start, kill] of [
      ['EVAL / SCRIPT KILL', cmd('EVAL', 'while true do end', '1', KEY), cmd('SCRIPT', 'KILL')],
      ['FCALL / FUNCTION KILL', cmd('FCALL', 'spin', '1', KEY), cmd('FUNCTION', 'KILL')]
    ] as const) {
      const direct = await busyScenario(owner.port, start, kill)
      const before = rounds
      const through = await busyScenario(proxy.address.port, start, kill)
      t.diagnostic(`${name}: kill answered in ${direct.killMs} ms direct, ${through.killMs} ms through respool; the other master's client made ${rounds - before} rounds meanwhile`)
      assert.match(direct.busy, /^-BUSY /)
      assert.equal(through.busy, '$-1\r\n', 'held behind the script on the shared lane, then answered')
      assert.deepEqual({ ...through, killMs: 0, busy: '' }, { ...direct, killMs: 0, busy: '' }, `${name}: direct ${JSON.stringify(direct)}, through respool ${JSON.stringify(through)}`)
      assert.ok(through.killMs < 2000, `${name}: the kill took ${through.killMs} ms`)
      assert.ok(rounds > before, 'the other master was served while this one was busy')
    }
  } finally {
    running = false
    await load
  }
})

test('cluster mode: SCRIPT KILL with no script running answers -NOTBUSY, as Redis; a wrong arity gets Redis\'s error; the pins it took go back', { timeout: 30000 }, async () => {
  const direct = await RawClient.connect(owner.port)
  after(() => { direct.close() })
  const through = await RawClient.connect(proxy.address.port)
  after(() => { through.close() })
  const commands = [cmd('SCRIPT', 'KILL'), cmd('FUNCTION', 'KILL'), cmd('SCRIPT', 'KILL', 'x'), cmd('PING')]
  direct.write(Buffer.concat(commands))
  const expected = await new FrameReader(direct).take(commands.length, 5000)
  // Many at once, in one pipeline: more than the pins there are, so they must be given back.
  const rounds = 10
  through.write(Buffer.concat(Array.from({ length: rounds }, () => Buffer.concat(commands))))
  const got = await new FrameReader(through).take(commands.length * rounds, 10000)
  for (let i = 0; i < rounds; i++) assert.deepEqual(got.slice(i * commands.length, (i + 1) * commands.length), expected)
})
