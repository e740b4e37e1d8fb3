import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface RedisServer {
  port: number
  url: string
  /** Extra arguments given at start (kept for restart). */
  args: string[]
  process: ChildProcess
  /** Stops the server (SIGKILL), waits for it to exit and removes its directory. Idempotent. */
  stop (): Promise<void>
  /** Kills the server (SIGKILL) but keeps its directory (AOF/RDB) for restart(). */
  kill (): Promise<void>
  /** Sends a signal without waiting (SIGSTOP/SIGCONT for stalls). */
  signal (sig: NodeJS.Signals): void
  /** Starts it again on the same port and directory (after kill()). */
  restart (): Promise<void>
}

/** A port that was free a moment ago (the caller retries if it is taken by then). */
export async function freePort (): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  server.close()
  await once(server, 'close')
  return port
}

/** Starts a real redis-server on a free loopback port, without persistence. */
export async function startRedis (args: string[] = []): Promise<RedisServer> {
  // Its own working directory: persistence and a replica's sync file stay out of the repository.
  const dir = mkdtempSync(join(tmpdir(), 'respool-redis-'))
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const child = await spawnRedis(port, args, dir)
    if (child !== null) return wrap(port, args, child, dir)
  }
  rmSync(dir, { recursive: true, force: true })
  throw new Error('could not start redis-server on a free port')
}

async function spawnRedis (port: number, args: string[], dir: string): Promise<ChildProcess | null> {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--protected-mode', 'no', '--loglevel', 'warning', '--dir', dir, ...args
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  track(child)
  let output = ''
  child.stdout?.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { output += d.toString() })
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      if (/Address already in use/.test(output)) return null
      throw new Error(`redis-server exited: ${output}`)
    }
    if (await ping(port)) return child
    await delay(20)
  }
  child.kill('SIGKILL')
  throw new Error(`redis-server did not start on ${port}: ${output}`)
}

/** True if something answering PING listens on the port. */
export async function ping (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(500, () => { done(false) })
    socket.on('error', () => { done(false) })
    socket.on('connect', () => { socket.write('PING\r\n') })
    socket.on('data', (d) => { done(d.toString().startsWith('+PONG') || d.toString().startsWith('-')) })
  })
}

/** Every redis-server still running when the test process exits (even on a crash) is killed. */
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

function track (child: ChildProcess): ChildProcess {
  running.add(child)
  child.once('exit', () => running.delete(child))
  return child
}

function wrap (port: number, args: string[], child: ChildProcess, dir: string): RedisServer {
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    args,
    process: child,
    async stop () {
      await server.kill()
      rmSync(dir, { recursive: true, force: true })
    },
    async kill () {
      const proc = server.process
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const exited = once(proc, 'exit')
      proc.kill('SIGKILL') // also ends a stopped (SIGSTOP) process, without letting it run first
      await exited
    },
    signal (sig) {
      server.process.kill(sig)
    },
    async restart () {
      await server.kill()
      for (let attempt = 0; attempt < 50; attempt++) {
        const proc = await spawnRedis(port, args, dir)
        if (proc !== null) {
          server.process = proc
          return
        }
        await delay(50)
      }
      throw new Error(`could not restart redis-server on ${port}`)
    }
  }
  return server
}
