import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { startRedis, freePort } from '../helpers/redis-server.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
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
  assert.equal(await c.readExactly('+OK\r\n$2\r\nok\r\n'), '+OK\r\n$2\r\nok\r\n')
  c.close()
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
})

test('run as a program (the npm bin), respool starts Node.js with the flags of its first line and serves', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  // The Node.js running the tests is the one `env` finds first.
  const path = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`
  const child = spawn(BIN, ['--port', '0', '--upstream', redis.url], { env: { ...process.env, PATH: path }, stdio: ['ignore', 'pipe', 'pipe'] })
  after(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  const r: Running = { child, stdout: () => out, stderr: () => err }
  const port = await listeningPort(r)
  const argv = readFileSync(`/proc/${child.pid as number}/cmdline`, 'utf8').split('\0')
  const first = readFileSync(BIN, 'utf8').split('\n', 1)[0]
  assert.match(first, /^#!\/usr\/bin\/env -S node --max-semi-space-size=4$/)
  assert.ok(argv.includes('--max-semi-space-size=4'), `argv: ${argv.join(' ')}`)
  const c = await RawClient.connect(port)
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
  c.close()
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  assert.equal((await exited)[0], 0)
})

test('--help documents every flag', { timeout: 10000 }, async () => {
  const r = run(['--help'])
  const [code] = await once(r.child, 'exit')
  assert.equal(code, 0)
  for (const flag of ['--host', '--port', '--upstream', '--pool-size', '--max-pins', '--acquire-timeout', '--connect-timeout', '--command-timeout', '--min-idle', '--max-clients', '--max-pipeline', '--max-output-buffer', '--shutdown-grace', '--log-level', 'RESPOOL_']) {
    assert.ok(r.stdout().includes(flag), `help mentions ${flag}`)
  }
})

test('bad flags and config files give one clear line and exit code 2', { timeout: 20000 }, async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = mkdtempSync(join(tmpdir(), 'respool-badcfg-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  const misspelt = join(dir, 'misspelt.json')
  writeFileSync(misspelt, JSON.stringify({ poolsize: 3 }))
  const broken = join(dir, 'broken.json')
  writeFileSync(broken, '{"pool-size": 3,')
  const cases: Array<{ args: string[], env?: Record<string, string>, says: RegExp }> = [
    { args: ['--pool-size', '0'], says: /^respool: pool-size: must be an integer from 2 to 10000, got 0$/m },
    { args: ['--pool-size', '1'], says: /^respool: pool-size: must be at least 2 \(one connection for shared traffic, at least one that a transaction, subscriber or blocking command can pin\), got 1$/m },
    { args: ['--pool-size', '4', '--max-pins', '4'], says: /^respool: max-pins: must be an integer from 1 to 3, got 4$/m },
    { args: ['--upstream', 'http://nope'], says: /^respool: upstream: expected redis:\/\/, rediss:\/\/ or unix:\/\/, got http:\/\//m },
    { args: ['--no-such-flag'], says: /^respool: unknown option such-flag \(a flag or a key in the --config file\)$/m },
    { args: ['--Pool-Size', '3'], says: /^respool: unknown option Pool-Size \(a flag or a key in the --config file\)$/m },
    { args: ['--port', 'abc'], says: /^respool: port: must be an integer/m },
    { args: ['--log-level', 'loud'], says: /^respool: Invalid values:[\s\S]*log-level/m },
    { args: ['--config', misspelt], says: /^respool: unknown option poolsize \(a flag or a key in the --config file\)$/m },
    { args: ['--config', broken], says: new RegExp(`^respool: config file ${broken.replace(/[/.]/g, '\\$&')}: .*JSON`, 'm') },
    { args: ['--config', join(dir, 'missing.json')], says: /^respool: config file .*missing\.json: ENOENT/m }
  ]
  for (const { args, env, says } of cases) {
    const r = run(['--port', '0', ...args], env)
    const [code] = await once(r.child, 'exit')
    const what = `${args.join(' ')} ${JSON.stringify(env ?? {})}`
    assert.equal(code, 2, what)
    assert.match(r.stderr(), says, what)
    assert.match(r.stderr(), /Run 'respool --help' for the options\.\n$/, what)
    assert.ok(r.stderr().length < 600, `${what}: one short message, not the whole help`)
  }
})

test('an unknown RESPOOL_* environment variable is a warning on stderr, and respool starts with the rest', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const r = run(['--port', '0', '--upstream', redis.url], { RESPOOL_POOLSIZE: '3', RESPOOL_NO_SUCH_THING: '1', RESPOOL_MAX_PINS: '2' })
  const port = await listeningPort(r)
  assert.match(r.stderr(), /^respool: warning: ignoring unknown environment variable RESPOOL_POOLSIZE \(did you mean RESPOOL_POOL_SIZE\?\): every RESPOOL_\* variable sets the flag of the same name/m)
  assert.match(r.stderr(), /^respool: warning: ignoring unknown environment variable RESPOOL_NO_SUCH_THING: /m)
  assert.match(r.stdout(), /with at most 8 upstream connections/, 'the misspelt pool size is not applied')
  const c = await RawClient.connect(port)
  c.write(cmd('RESPOOL', 'POOLS'))
  const frames = new FrameReader(c)
  const [pools] = await frames.take(1, 5000)
  assert.match(pools, /max_pins:2\r\n/, 'known RESPOOL_* variables still apply')
  c.close()
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
})

test('an unreachable upstream: respool starts, commands fail fast with a clear error, and it serves once Redis appears', { timeout: 30000 }, async (t) => {
  const upstreamPort = await freePort()
  const r = run(['--port', '0', '--upstream', `redis://127.0.0.1:${upstreamPort}`, '--acquire-timeout', '400', '--reconnect-max', '200'])
  const port = await listeningPort(r)
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  const started = Date.now()
  c.write(Buffer.concat([cmd('GET', 'x'), cmd('PING')]))
  const frames = new FrameReader(c)
  const [first, second] = await frames.take(2, 5000)
  const elapsed = Date.now() - started
  assert.match(first, new RegExp(`^-ERR respool: upstream redis://127\\.0\\.0\\.1:${upstreamPort}/0 unavailable \\(connect to 127\\.0\\.0\\.1:${upstreamPort} failed: .*ECONNREFUSED.*\\), waited \\d+ ms\\r\\n$`))
  assert.match(second, /^-ERR respool: upstream /)
  t.diagnostic(`errors after ${elapsed} ms`)
  // Within the acquire timeout (400 ms) and room for a loaded machine: failing fast, not hanging.
  assert.ok(elapsed < 4000, `errors took ${elapsed} ms`)
  assert.match(r.stdout(), /cannot connect to upstream; retrying with backoff/)
  // Redis comes up on that port; respool serves again without a restart.
  const { spawn: spawnProcess } = await import('node:child_process')
  const redisProc = spawnProcess('redis-server', ['--port', String(upstreamPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  after(() => { redisProc.kill('SIGKILL') })
  const back = Date.now()
  let ok = false
  while (!ok && Date.now() - back < 10_000) {
    c.write(cmd('PING'))
    const reply = await frames.next(3000)
    ok = reply === '+PONG\r\n'
    if (!ok) assert.match(reply, /^-ERR respool: upstream /)
  }
  assert.ok(ok, 'respool serves once Redis is up')
  t.diagnostic(`served again ${Date.now() - back} ms after Redis was started`)
})

test('configuration precedence: flags over RESPOOL_* variables over the config file over defaults; SIGHUP reloads', { timeout: 30000 }, async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const dir = mkdtempSync(join(tmpdir(), 'respool-cfg-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'respool.json')
  writeFileSync(file, JSON.stringify({ 'pool-size': 5, upstream: `redis://127.0.0.1:${redis.port}`, 'log-level': 'info' }))
  const poolSizeOf = async (r: Running): Promise<number> => {
    await listeningPort(r)
    const line = r.stdout().split('\n').find((l) => l.includes('listening on')) as string
    return Number(/with at most (\d+) upstream connections/.exec(line)?.[1])
  }
  const stop = async (r: Running): Promise<void> => {
    const exited = once(r.child, 'exit')
    r.child.kill('SIGTERM')
    await exited
  }
  const fromFile = run(['--config', file, '--port', '0'])
  assert.equal(await poolSizeOf(fromFile), 5)
  await stop(fromFile)
  const fromEnv = run(['--config', file, '--port', '0'], { RESPOOL_POOL_SIZE: '6' })
  assert.equal(await poolSizeOf(fromEnv), 6)
  await stop(fromEnv)
  const fromFlag = run(['--config', file, '--port', '0', '--pool-size', '7'], { RESPOOL_POOL_SIZE: '6' })
  assert.equal(await poolSizeOf(fromFlag), 7)
  await stop(fromFlag)
  // SIGHUP: the file changes, the running proxy applies what it safely can.
  const live = run(['--config', file, '--port', '0'])
  const port = await listeningPort(live)
  writeFileSync(file, JSON.stringify({ 'pool-size': 9, upstream: `redis://127.0.0.1:${redis.port}`, 'log-level': 'info', 'max-clients': 50 }))
  live.child.kill('SIGHUP')
  await waitFor(() => /configuration reloaded/.test(live.stdout()), 'reload logged', 5000)
  const reloadLine = live.stdout().split('\n').find((l) => l.includes('configuration reloaded')) as string
  assert.deepEqual(JSON.parse(reloadLine).applied.sort(), ['maxClients', 'maxPins', 'poolSize']) // the pin cap follows the pool size
  const c = await RawClient.connect(port)
  c.write(cmd('RESPOOL', 'POOLS'))
  assert.match(await new FrameReader(c).next(), /pool_size:9\r\n/)
  c.close()
  await stop(live)
})

test('a SIGHUP sent the moment the start line appears reloads instead of killing the process', { timeout: 60000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  // Signal from inside the 'data' callback, as fast as a supervisor could; a handler installed
  // after the start line is written loses this race now and then, so try it many times.
  for (let attempt = 0; attempt < 10; attempt++) {
    const child = spawn(process.execPath, [BIN, '--port', '0', '--upstream', `redis://127.0.0.1:${redis.port}`], { stdio: ['ignore', 'pipe', 'pipe'] })
    after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    let out = ''
    let signalled = false
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (!signalled && /listening on/.test(out)) { signalled = true; child.kill('SIGHUP') }
    })
    const exited = once(child, 'exit')
    await waitFor(() => /configuration reloaded/.test(out) || child.exitCode !== null || child.signalCode !== null, 'reload or exit', 10000)
    assert.equal(child.signalCode, null, `attempt ${attempt}: killed by ${String(child.signalCode)}`)
    assert.match(out, /configuration reloaded/)
    child.kill('SIGTERM')
    await exited
  }
})

test('SIGTERM while commands wait for an unreachable upstream: the waiters get an error and respool exits promptly', { timeout: 30000 }, async (t) => {
  // Nothing listens on this port: every connect is refused, and the PING waits for a lane while
  // respool retries with backoff. Closing then must not turn generic-pool's retry into a loop
  // that never yields (the process would spin at 100 % CPU and never exit).
  const deadPort = await freePort()
  const r = run(['--port', '0', '--upstream', `redis://127.0.0.1:${deadPort}`, '--acquire-timeout', '1500', '--reconnect-base', '20', '--reconnect-max', '40', '--shutdown-grace', '100', '--log-level', 'info'])
  const port = await listeningPort(r)
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  await waitFor(() => /cannot connect to upstream/.test(r.stdout()), 'a failed connect logged')
  await new Promise((resolve) => setTimeout(resolve, 100)) // a few more attempts, so one sleeps in backoff
  const exited = once(r.child, 'exit')
  const signalled = Date.now()
  r.child.kill('SIGTERM')
  const outcome = await Promise.race([exited.then(() => 'exited'), new Promise((resolve) => setTimeout(resolve, 5000, 'still running'))])
  if (outcome !== 'exited') r.child.kill('SIGKILL')
  assert.equal(outcome, 'exited', `respool did not exit within 5 s of SIGTERM; stdout=${r.stdout().slice(-2000)}`)
  assert.equal(r.child.exitCode, 0)
  t.diagnostic(`exited ${Date.now() - signalled} ms after SIGTERM`)
  // The waiting PING was answered with an error or its connection closed: it did not vanish.
  const answer = await c.readUntilClose(5000)
  if (answer !== '') assert.match(answer, /^-ERR respool: [^\r\n]*(shutting down|unavailable)[^\r\n]*\r\n$/)
})

test('Kubernetes service-link variables of Services named respool and respool-metrics are ignored with a warning, not taken as settings', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const links = {
    RESPOOL_SERVICE_HOST: '10.0.0.7',
    RESPOOL_SERVICE_PORT: '6380',
    RESPOOL_PORT: 'tcp://10.0.0.7:6380',
    RESPOOL_PORT_6380_TCP: 'tcp://10.0.0.7:6380',
    RESPOOL_PORT_6380_TCP_PROTO: 'tcp',
    RESPOOL_PORT_6380_TCP_PORT: '6380',
    RESPOOL_PORT_6380_TCP_ADDR: '10.0.0.7',
    // A second Service, respool-metrics: RESPOOL_METRICS_PORT is also the name of a real flag.
    RESPOOL_METRICS_SERVICE_HOST: '10.0.0.8',
    RESPOOL_METRICS_SERVICE_PORT_METRICS: '9180',
    RESPOOL_METRICS_PORT: 'tcp://10.0.0.8:9180',
    RESPOOL_METRICS_PORT_9180_TCP_PROTO: 'tcp'
  }
  const r = run(['--port', '0', '--upstream', `redis://127.0.0.1:${redis.port}`, '--log-level', 'info'], { ...links, RESPOOL_POOL_SIZE: '3' })
  const port = await listeningPort(r)
  const warning = JSON.parse(r.stdout().split('\n').find((l) => l.includes('service-link')) as string) as { ignored: string[] }
  assert.deepEqual(warning.ignored.sort(), Object.keys(links).sort())
  assert.match(r.stdout(), /with at most 3 upstream connections/, 'real RESPOOL_* settings still apply')
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
})

test('a port already in use: a clear message and exit code 1', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const r = run(['--port', String(redis.port), '--upstream', `redis://127.0.0.1:${redis.port}`])
  const [code] = await once(r.child, 'exit') as [number | null]
  assert.equal(code, 1)
  assert.match(r.stderr(), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${redis.port}: .*EADDRINUSE`))
})

test('a production install (npm ci --omit=dev, as in the Dockerfile) starts and proxies', { timeout: 180000 }, async () => {
  const { mkdtempSync, cpSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { execFile } = await import('node:child_process')
  const { promisify } = await import('node:util')
  const root = fileURLToPath(new URL('../../../', import.meta.url))
  const dir = mkdtempSync(join(tmpdir(), 'respool-prod-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  for (const entry of ['package.json', 'package-lock.json', 'bin', 'dist/src']) cpSync(join(root, entry), join(dir, entry), { recursive: true })
  await promisify(execFile)('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, timeout: 170000 })
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const child = spawn(process.execPath, [join(dir, 'bin/respool.js'), '--port', '0', '--upstream', redis.url], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  after(() => { child.kill('SIGKILL') })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  await waitFor(() => /listening on/.test(out), 'start line', 10000)
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1])
  const c = await RawClient.connect(port)
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
  c.close()
})

test('SIGTERM drains (a client in MULTI may finish); a second signal exits at once', { timeout: 20000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const r = run(['--port', '0', '--upstream', redis.url, '--shutdown-grace', '10000'])
  const port = await listeningPort(r)
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  c.write(cmd('BLPOP', 'never', '0')) // holds a pin: the drain would wait for it
  await waitFor(async () => /blocked_clients:1\r\n/.test(await commandOn(redis.port, 'INFO', 'clients')), 'BLPOP blocked in Redis')
  r.child.kill('SIGTERM')
  await waitFor(() => /draining/.test(r.stdout()), 'drain logged')
  const exited = once(r.child, 'exit')
  const started = Date.now()
  r.child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 1)
  t.diagnostic(`exited ${Date.now() - started} ms after the second signal`)
  assert.ok(Date.now() - started < 5000, 'the second signal did not wait for the grace period (10 s)')
})
