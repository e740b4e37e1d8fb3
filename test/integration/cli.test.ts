import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { startRedis, freePort } from '../helpers/redis-server.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/respool.js', import.meta.url))

interface Running { child: ChildProcess, stdout: () => string, stderr: () => string }

function run (args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  after(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { child, stdout: () => out, stderr: () => err }
}

async function listeningPort (r: Running): Promise<number> {
  await waitFor(() => /listening on/.test(r.stdout()), `start line; stdout=${r.stdout()} stderr=${r.stderr()}`, 10000)
  const line = r.stdout().split('\n').find((l) => l.includes('listening on')) as string
  const msg = JSON.parse(line).msg as string
  return Number(/listening on 127\.0\.0\.1:(\d+)/.exec(msg)?.[1])
}

test('starts on a free port, says where it listens and forwards, proxies, and drains on SIGTERM', { timeout: 20000 }, async () => {
  const redis = await startRedis(['--requirepass', 'unused-secret'])
  after(async () => { await redis.stop() })
  const r = run(['--port', '0', '--upstream', `redis://:unused-secret@127.0.0.1:${redis.port}/0`], { RESPOOL_POOL_SIZE: '3' })
  const port = await listeningPort(r)
  assert.ok(port > 0)
  const line = r.stdout().split('\n').find((l) => l.includes('listening on')) as string
  assert.match(line, new RegExp(`forwarding to redis://127\\.0\\.0\\.1:${redis.port}/0 with at most 3 upstream connections`))
  assert.doesNotMatch(r.stdout() + r.stderr(), /unused-secret/)
  const c = await RawClient.connect(port)
  c.write(Buffer.concat([cmd('SET', 'cli', 'ok'), cmd('GET', 'cli')]))
  assert.equal(await c.readLike('+OK\r\n$2\r\nok\r\n'), '+OK\r\n$2\r\nok\r\n')
  c.close()
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
})

test('--help documents every flag', { timeout: 10000 }, async () => {
  const r = run(['--help'])
  const [code] = await once(r.child, 'exit')
  assert.equal(code, 0)
  for (const flag of ['--host', '--port', '--upstream', '--pool-size', '--max-pins', '--acquire-timeout', '--connect-timeout', '--command-timeout', '--min-idle', '--max-clients', '--max-pipeline', '--max-output-buffer', '--shutdown-grace', '--log-level', 'RESPOOL_']) {
    assert.ok(r.stdout().includes(flag), `help mentions ${flag}`)
  }
})

test('bad flags give a clear message and a non-zero exit', { timeout: 10000 }, async () => {
  for (const args of [['--pool-size', '0'], ['--upstream', 'http://nope'], ['--no-such-flag'], ['--port', 'abc']]) {
    const r = run(args)
    const [code] = await once(r.child, 'exit')
    assert.notEqual(code, 0, args.join(' '))
    assert.match(r.stderr(), /pool-size|upstream|no-such-flag|port/i, args.join(' '))
  }
})

test('an unreachable upstream: respool starts, commands fail fast with a clear error, and it serves once Redis appears', { timeout: 30000 }, async () => {
  const upstreamPort = await freePort()
  const r = run(['--port', '0', '--upstream', `redis://127.0.0.1:${upstreamPort}`, '--acquire-timeout', '400', '--reconnect-max', '200'])
  const port = await listeningPort(r)
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  const started = Date.now()
  c.write(Buffer.concat([cmd('GET', 'x'), cmd('PING')]))
  await waitFor(() => (c.buffered.toString().match(/\r\n/g) ?? []).length >= 2, 'two error replies', 5000)
  const elapsed = Date.now() - started
  const text = (await c.read(c.buffered.length)).toString()
  assert.match(text, new RegExp(`^-ERR respool: upstream redis://127\\.0\\.0\\.1:${upstreamPort}/0 unavailable \\(connect to 127\\.0\\.0\\.1:${upstreamPort} failed: .*ECONNREFUSED.*\\), waited \\d+ ms\\r\\n-ERR respool: upstream`))
  assert.ok(elapsed < 2000, `errors took ${elapsed} ms`)
  assert.match(r.stdout(), /cannot connect to upstream; retrying with backoff/)
  // Redis comes up on that port; respool serves again without a restart.
  const { spawn: spawnProcess } = await import('node:child_process')
  const redisProc = spawnProcess('redis-server', ['--port', String(upstreamPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  after(() => { redisProc.kill('SIGKILL') })
  const back = Date.now()
  let ok = false
  while (!ok && Date.now() - back < 5000) {
    c.write(cmd('PING'))
    await waitFor(() => c.buffered.toString().endsWith('\r\n'), 'a reply', 3000)
    ok = (await c.read(c.buffered.length)).toString() === '+PONG\r\n'
    if (!ok) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  assert.ok(ok, 'respool serves once Redis is up')
  assert.ok(Date.now() - back < 3000, `served again after ${Date.now() - back} ms`)
})
