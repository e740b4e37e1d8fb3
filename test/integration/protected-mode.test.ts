import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { once } from 'node:events'

/**
 * Protected mode, tested from an address that is not loopback. Everything runs inside a network
 * namespace the test creates: its loopback interface also carries 10.213.0.1, so a client
 * connecting to 10.213.0.1 comes from 10.213.0.1 (not 127.0.0.1), as a client on another host
 * would. Redis, respool and redis-cli all run in there; no traffic leaves the namespace.
 */

const NS = `respool-pm-${process.pid}`
const OUTSIDE = '10.213.0.1'
const RESPOOL = fileURLToPath(new URL('../../../bin/respool.js', import.meta.url))
const children: ChildProcess[] = []
let usable = ''

function inNs (args: string[]): ReturnType<typeof spawnSync> {
  return spawnSync('ip', ['netns', 'exec', NS, ...args], { encoding: 'utf8', timeout: 10000 })
}

before(() => {
  if (process.getuid?.() !== 0) {
    usable = 'needs root to create a network namespace'
    return
  }
  const steps = [['ip', 'netns', 'add', NS], ['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up'], ['ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', `${OUTSIDE}/32`, 'dev', 'lo']]
  for (const [cmd, ...args] of steps) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    if (r.status !== 0) {
      usable = `cannot set up a network namespace: ${cmd} ${args.join(' ')}: ${r.stderr}`
      return
    }
  }
})

after(() => {
  for (const child of children) child.kill('SIGKILL')
  spawnSync('ip', ['netns', 'del', NS])
})

async function startInNs (args: string[], ready: RegExp): Promise<{ child: ChildProcess, output: () => string }> {
  const child = spawn('ip', ['netns', 'exec', NS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let output = ''
  const seen = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      output += d.toString()
      if (ready.test(output)) resolve()
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => { reject(new Error(`${args[0]} exited with ${String(code)}: ${output}`)) })
  })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 10000)
  try {
    await seen
  } finally {
    clearTimeout(timer)
  }
  return { child, output: () => output }
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

/** redis-cli inside the namespace; returns what it printed. */
function cli (host: string, port: number, ...args: string[]): string {
  const r = inNs(['redis-cli', '-h', host, '-p', String(port), ...args])
  return `${String(r.stdout)}${String(r.stderr)}`.trim()
}

test('protected mode: without client authentication only loopback clients are served; --password or --protected-mode no opens it up', { timeout: 60000 }, async (t) => {
  if (usable !== '') {
    t.skip(usable)
    return
  }
  const redis = await startInNs(['redis-server', '--port', '6379', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/)
  try {
    const common = ['node', RESPOOL, '--host', '0.0.0.0', '--upstream', 'redis://127.0.0.1:6379', '--log-level', 'info']

    // Default: protected.
    const guarded = await startInNs([...common, '--port', '6380'], /protected mode/)
    assert.match(guarded.output(), /only loopback and unix-socket clients are served/, 'respool says so at start')
    assert.equal(cli('127.0.0.1', 6380, 'PING'), 'PONG', 'a loopback client is served')
    const denied = cli(OUTSIDE, 6380, 'PING')
    assert.match(denied, /^DENIED respool is running in protected mode because no client authentication is configured\..*--password.*--protected-mode no/, denied)
    assert.equal(cli(OUTSIDE, 6380, 'SET', 'pm:k', 'v').includes('DENIED'), true)
    assert.equal(cli('127.0.0.1', 6379, 'EXISTS', 'pm:k'), '0', 'nothing from a denied client reaches Redis')
    assert.equal(cli('127.0.0.1', 6380, 'PING'), 'PONG', 'a refused client costs only itself')
    // Probes that connect and reset at once (TCP health checks, port scans) never take it down.
    const probes = inNs(['node', '-e', `const net = require('node:net'); let n = 0; const go = () => { const s = net.connect(6380, '${OUTSIDE}', () => { s.resetAndDestroy(); if (++n < 20) go() }); s.on('error', () => {}) }; go()`])
    assert.equal(probes.status, 0, String(probes.stderr))
    assert.equal(cli('127.0.0.1', 6380, 'PING'), 'PONG', 'respool survived the probes')
    await stop(guarded.child)

    // With a password, other addresses are served once they AUTH.
    const withPassword = await startInNs([...common, '--port', '6381', '--password', 'pm-secret'], /listening on/)
    assert.match(cli(OUTSIDE, 6381, 'PING'), /NOAUTH/)
    assert.equal(cli(OUTSIDE, 6381, '--no-auth-warning', '-a', 'pm-secret', 'PING'), 'PONG')
    await stop(withPassword.child)

    // Explicit opt-out.
    const open = await startInNs([...common, '--port', '6382', '--protected-mode', 'no'], /listening on/)
    assert.doesNotMatch(open.output(), /protected mode/)
    assert.equal(cli(OUTSIDE, 6382, 'PING'), 'PONG')
    await stop(open.child)
  } finally {
    await stop(redis.child)
  }
})
