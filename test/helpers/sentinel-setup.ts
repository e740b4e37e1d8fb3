import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startRedis, freePort, ping, type RedisServer } from './redis-server.js'
import { waitFor } from './wait.js'

/** A sentinel process (redis-server --sentinel) with its own writable config file. */
export interface SentinelProcess {
  port: number
  process: ChildProcess
  stop (): Promise<void>
}

/** 1 master, 1 replica and n sentinels on free loopback ports; stop() ends them all. */
export interface SentinelSetup {
  name: string
  /** The two data nodes, by port (which is master changes with failovers). */
  nodes: Map<number, RedisServer>
  sentinels: SentinelProcess[]
  /** "host:port" of every sentinel. */
  sentinelAddresses: string[]
  /** Where the sentinels say the master is (asks the first sentinel that answers). */
  masterPort (): Promise<number>
  /** SENTINEL FAILOVER, then waits until the sentinels name the other node and it says master. */
  failover (): Promise<number>
  /** An ioredis client to one sentinel (closed by stop()). */
  sentinelClient (i: number): Redis
  /** A direct ioredis client to a data node (closed by stop()). */
  nodeClient (port: number): Redis
  stop (): Promise<void>
}

export interface SentinelSetupOptions {
  sentinels?: number
  /** requirepass on the sentinels. */
  sentinelPassword?: string
  /** The data nodes' password, for the sentinels to reach them (sentinel auth-pass). */
  authPass?: string
  downAfterMs?: number
  failoverTimeoutMs?: number
}

const NAME = 'mymaster'

export async function startSentinelSetup (options: SentinelSetupOptions = {}): Promise<SentinelSetup> {
  const clients: Redis[] = []
  const sentinels: SentinelProcess[] = []
  // A demoted master resyncs from the new one: without the diskless-sync delay (5 s by default)
  // it is a usable replica again within a second.
  const sync = ['--repl-diskless-sync-delay', '0']
  const master = await startRedis(sync)
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port), ...sync])
  const nodes = new Map([[master.port, master], [replica.port, replica]])
  const stopAll = async (): Promise<void> => {
    for (const c of clients) c.disconnect()
    await Promise.all(sentinels.map(async (s) => { await s.stop() }))
    await Promise.all([...nodes.values()].map(async (n) => { await n.stop() }))
  }
  try {
    const auth = options.sentinelPassword !== undefined ? { password: options.sentinelPassword } : {}
    for (let i = 0; i < (options.sentinels ?? 3); i++) {
      sentinels.push(await startSentinel(master.port, options))
    }
    const newClient = (port: number, extra: object = {}): Redis => {
      const c = new Redis({ host: '127.0.0.1', port, lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => 100, ...extra })
      c.on('error', () => {})
      clients.push(c)
      return c
    }
    const sentinelClients = sentinels.map((s) => newClient(s.port, auth))
    // Sentinel reads its instances' INFO every 10 s and says hello every 2 s; a replica is only
    // promoted once Sentinel has fresh INFO from it. Faster periods keep failovers in a test short.
    for (const c of sentinelClients) await c.call('SENTINEL', 'DEBUG', 'info-period', '200', 'publish-period', '200')
    const nodeClients = new Map<number, Redis>()
    const nodeClient = (port: number): Redis => {
      let c = nodeClients.get(port)
      if (c === undefined) {
        c = newClient(port)
        nodeClients.set(port, c)
      }
      return c
    }
    // Ready when every sentinel sees the replica and the other sentinels.
    await waitFor(async () => {
      for (const c of sentinelClients) {
        const info = await c.call('SENTINEL', 'MASTER', NAME).catch(() => null) as string[] | null
        if (info === null) return false
        const fields = new Map<string, string>()
        for (let i = 0; i + 1 < info.length; i += 2) fields.set(info[i], info[i + 1])
        if (Number(fields.get('num-other-sentinels')) !== sentinels.length - 1 || Number(fields.get('num-slaves')) !== 1) return false
      }
      const link = await nodeClient(replica.port).info('replication')
      return /master_link_status:up/.test(link)
    }, 'sentinels see the replica and each other', 20000)
    const masterPort = async (): Promise<number> => {
      for (const c of sentinelClients) {
        const addr = await c.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', NAME).catch(() => null) as string[] | null
        if (addr !== null) return Number(addr[1])
      }
      throw new Error('no sentinel answered')
    }
    return {
      name: NAME,
      nodes,
      sentinels,
      sentinelAddresses: sentinels.map((s) => `127.0.0.1:${s.port}`),
      masterPort,
      async failover () {
        const before = await masterPort()
        const other = [...nodes.keys()].find((p) => p !== before) as number
        // Sentinel promotes a replica only once it has fresh INFO from it with its link up.
        await waitFor(async () => {
          const replicas = await sentinelClients[0].call('SENTINEL', 'REPLICAS', NAME).catch(() => []) as string[][]
          return replicas.some((r) => r.join(' ').includes(`port ${other}`) && r.join(' ').includes('master-link-status ok') && !/s_down|disconnected/.test(r.join(' ')))
        }, 'the sentinels see a good replica', 15000)
        // -INPROG or -NOGOODSLAVE right after a previous failover: the replica is not ready yet.
        for (let attempt = 0; ; attempt++) {
          try {
            await sentinelClients[0].call('SENTINEL', 'FAILOVER', NAME)
            break
          } catch (err) {
            if (attempt > 100) throw err
            await delay(100)
          }
        }
        await waitFor(async () => await masterPort() === other && /^role:master/m.test(await nodeClient(other).info('replication')), 'the sentinels name the other node', 15000)
        return other
      },
      sentinelClient: (i) => sentinelClients[i],
      nodeClient,
      stop: stopAll
    }
  } catch (err) {
    await stopAll()
    throw err
  }
}

/** Waits until the old master has been turned into a replica of `masterPort` and is in sync. */
export async function waitForReplica (setup: SentinelSetup, port: number, masterPort: number): Promise<void> {
  await waitFor(async () => {
    const info = await setup.nodeClient(port).info('replication').catch(() => '')
    return new RegExp(`master_port:${masterPort}`).test(info) && /master_link_status:up/.test(info)
  }, `${port} replicates ${masterPort}`, 20000)
}

export async function startSentinel (masterPort: number, options: SentinelSetupOptions = {}): Promise<SentinelProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'respool-sentinel-'))
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(conf, [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir}`,
      'loglevel notice',
      ...(process.env.RESPOOL_TEST_SENTINEL_LOG !== undefined ? [`logfile ${process.env.RESPOOL_TEST_SENTINEL_LOG}-${port}.log`] : []),
      `sentinel monitor ${NAME} 127.0.0.1 ${masterPort} 2`,
      `sentinel down-after-milliseconds ${NAME} ${options.downAfterMs ?? 1000}`,
      `sentinel failover-timeout ${NAME} ${options.failoverTimeoutMs ?? 3000}`,
      ...(options.sentinelPassword !== undefined ? [`requirepass ${options.sentinelPassword}`] : []),
      ...(options.authPass !== undefined ? [`sentinel auth-pass ${NAME} ${options.authPass}`] : []),
      ''
    ].join('\n'))
    const child = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let output = ''
    child.stderr?.on('data', (d: Buffer) => { output += d.toString() })
    const deadline = Date.now() + 5000
    let up = false
    while (Date.now() < deadline && child.exitCode === null) {
      if (await ping(port)) {
        up = true
        break
      }
      await delay(20)
    }
    if (!up) {
      child.kill('SIGKILL')
      if (attempt < 4) continue
      rmSync(dir, { recursive: true, force: true })
      throw new Error(`sentinel did not start: ${output}`)
    }
    process.once('exit', () => { child.kill('SIGKILL') })
    return {
      port,
      process: child,
      async stop () {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit')
          child.kill('SIGKILL')
          await exited
        }
        rmSync(dir, { recursive: true, force: true })
      }
    }
  }
  throw new Error('could not start a sentinel')
}
