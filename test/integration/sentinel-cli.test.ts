import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { startRedis } from '../helpers/redis-server.js'
import { startSentinel } from '../helpers/sentinel-setup.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/respool.js', import.meta.url))

function run (args: string[], env: Record<string, string> = {}): { child: ReturnType<typeof spawn>, out: () => string, err: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  after(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { child, out: () => out, err: () => err }
}

test('Sentinel from the command line: sentinel credentials apart from the data credentials; a wrong sentinel password is one line and exit code 2', { timeout: 30000 }, async () => {
  const master = await startRedis(['--requirepass', 'data-secret'])
  after(async () => { await master.stop() })
  const sentinel = await startSentinel(master.port, { sentinelPassword: 'sentinel-secret', authPass: 'data-secret' })
  after(async () => { await sentinel.stop() })

  const wrong = run(['--port', '0', '--sentinel', `127.0.0.1:${sentinel.port}`, '--sentinel-master', 'mymaster', '--upstream-password', 'data-secret'], { RESPOOL_SENTINEL_PASSWORD: 'wrong' })
  const [code] = await once(wrong.child, 'exit')
  assert.equal(code, 2)
  const lines = wrong.err().trim().split('\n')
  assert.equal(lines.length, 1, wrong.err())
  assert.match(lines[0], /^respool: sentinel auth failed: sentinel 127\.0\.0\.1:\d+ refused the sentinel credentials: WRONGPASS/)
  assert.doesNotMatch(wrong.out() + wrong.err(), /data-secret/)

  const right = run(['--port', '0', '--sentinel', `127.0.0.1:${sentinel.port}`, '--sentinel-master', 'mymaster', '--sentinel-password', 'sentinel-secret', '--upstream-password', 'data-secret'])
  await waitFor(() => /listening on/.test(right.out()), `start line; stdout=${right.out()} stderr=${right.err()}`, 10000)
  const line = right.out().split('\n').find((l) => l.includes('listening on')) as string
  assert.match(line, new RegExp(`forwarding to sentinel mymaster via 127\\.0\\.0\\.1:${sentinel.port}, master 127\\.0\\.0\\.1:${master.port}`))
  assert.doesNotMatch(right.out(), /secret/)
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(JSON.parse(line).msg as string)?.[1])
  const c = await RawClient.connect(port)
  c.write(Buffer.concat([cmd('SET', 'via-sentinel', 'ok'), cmd('GET', 'via-sentinel')]))
  assert.equal(await c.readExactly('+OK\r\n$2\r\nok\r\n'), '+OK\r\n$2\r\nok\r\n')
  c.close()
  right.child.kill('SIGTERM')
  await once(right.child, 'exit')
})
