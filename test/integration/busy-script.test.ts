import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'

/**
 * A runaway script: Redis answers SCRIPT KILL / FUNCTION KILL while busy, and everything else
 * with -BUSY. Through respool the kill must reach Redis at once (not queue behind the script on
 * the same upstream connection), the script's client must get Redis's own error, and everyone
 * must be served again, exactly as with direct connections.
 */

const LIBRARY = "#!lua name=busylib\nredis.register_function('spin', function() while true do end end)"

async function busyScenario (port: number, adminPort: number, start: Buffer, kill: Buffer): Promise<{ running: string, killed: string, busy: string, after: string, killMs: number }> {
  const runner = await RawClient.connect(port)
  const runnerFrames = new FrameReader(runner)
  runner.write(start)
  // Busy once Redis says so (lua-time-limit is 10 ms): a direct probe sees -BUSY.
  const probe = await RawClient.connect(adminPort)
  const probeFrames = new FrameReader(probe)
  for (let i = 0; i < 500; i++) {
    probe.write(cmd('PING'))
    if ((await probeFrames.next(5000)).startsWith('-BUSY')) break
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  probe.close()
  const other = await RawClient.connect(port)
  other.write(cmd('GET', 'busy:k'))
  const busy = await new FrameReader(other).next(5000)
  const killer = await RawClient.connect(port)
  const started = Date.now()
  killer.write(kill)
  const killed = await new FrameReader(killer).next(5000)
  const killMs = Date.now() - started
  const running = await runnerFrames.next(5000)
  other.write(cmd('GET', 'busy:k'))
  const afterKill = await new FrameReader(other).next(5000)
  for (const c of [runner, other, killer]) c.close()
  return { running, killed, busy, after: afterKill, killMs }
}

test('SCRIPT KILL and FUNCTION KILL reach a busy Redis at once through respool; others get -BUSY meanwhile, then service resumes', { timeout: 60000 }, async (t) => {
  const redis = await startRedis(['--lua-time-limit', '10'])
  after(async () => { await redis.stop() })
  const setup = await RawClient.connect(redis.port)
  setup.write(cmd('FUNCTION', 'LOAD', 'REPLACE', LIBRARY))
  assert.equal(await new FrameReader(setup).next(), '$7\r\nbusylib\r\n')
  setup.close()
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4 })
  after(async () => { await proxy.destroy() })

  for (const [name, start, kill] of [
    ['EVAL / SCRIPT KILL', cmd('EVAL', 'while true do end', '0'), cmd('SCRIPT', 'KILL')],
    ['FCALL / FUNCTION KILL', cmd('FCALL', 'spin', '0'), cmd('FUNCTION', 'KILL')]
  ] as const) {
    const direct = await busyScenario(redis.port, redis.port, start, kill)
    const through = await busyScenario(proxy.address.port, redis.port, start, kill)
    t.diagnostic(`${name}: kill answered in ${direct.killMs} ms direct, ${through.killMs} ms through respool`)
    assert.deepEqual({ ...through, killMs: 0 }, { ...direct, killMs: 0 }, `${name}: direct ${JSON.stringify(direct)}, through respool ${JSON.stringify(through)}`)
    assert.ok(through.killMs < 2000, `${name}: the kill took ${through.killMs} ms`)
  }
})
