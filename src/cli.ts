import { readFileSync } from 'node:fs'
import yargs, { type Options } from 'yargs'
import { hideBin } from 'yargs/helpers'
import { ProxyServer } from './proxy-server.js'
import { formatOutputLimits } from './client/output-limits.js'
import { DEFAULTS, validateConfig, type ProxyOptions } from './config.js'
import { ConfigError } from './errors.js'
import { createLogger, type Logger } from './ops/logger.js'
import cluster from 'node:cluster'
import { checkWorkerShares, workerConfig } from './ops/worker-shares.js'
import { WorkerPrimary } from './ops/workers.js'
import { workerIdentity } from './ops/worker-messages.js'
import { attachToPrimary, reportListening } from './ops/worker-process.js'

/** Every flag respool takes; each also reads RESPOOL_<FLAG> from the environment. */
const FLAGS: Record<string, Options> = {
  'host': { type: 'string', default: DEFAULTS.host, describe: 'Address to listen on for clients' },
  'port': { type: 'number', default: DEFAULTS.port, describe: 'Port to listen on (0 picks a free port and prints it)' },
  'upstream': { type: 'string', default: DEFAULTS.upstream, describe: 'Redis to forward to: redis://[user:pass@]host:port[/db], rediss://… or unix:///path?db=n; or Sentinel mode: redis+sentinel://[user:pass@]host:port[,host:port…]/master[/db]' },
  'sentinel': { type: 'string', array: true, describe: 'Sentinel mode: a sentinel to ask where the master is, host:port (repeatable, or comma-separated); --upstream\'s host and port are then unused (its credentials, database and scheme still apply to the master)' },
  'cluster': { type: 'string', array: true, describe: 'Cluster mode: a seed node of a Redis Cluster, host:port (repeatable, or comma-separated); --upstream\'s host and port are then unused (its credentials and scheme still apply to every node). Needs --pool-size of at least the number of masters + 2' },
  'sentinel-master': { type: 'string', describe: 'Sentinel mode: the master\'s name (sentinel monitor <name> …)' },
  'sentinel-user': { type: 'string', describe: 'User for AUTH on the sentinels (separate from the data credentials)' },
  'sentinel-password': { type: 'string', describe: 'Password for AUTH on the sentinels (separate from the data credentials)' },
  'sentinel-password-file': { type: 'string', describe: 'Read --sentinel-password from this file' },
  'sentinel-tls': { type: 'string', default: 'no', describe: 'yes: connect to the sentinels over TLS (verified with --upstream-tls-ca/--upstream-tls-servername)' },
  'pool-size': { type: 'number', default: DEFAULTS.poolSize, describe: 'Most upstream connections ever open' },
  'max-pins': { type: 'number', describe: 'Most connections pinned at once by transactions, blocking commands and subscribers (default: pool size - 1, so shared traffic always keeps one)' },
  'min-idle': { type: 'number', default: DEFAULTS.minIdle, describe: 'Upstream connections kept open even when idle' },
  'acquire-timeout': { type: 'number', default: DEFAULTS.acquireTimeoutMs, describe: 'ms a command may wait for an upstream connection before it fails' },
  'retry-budget': { type: 'number', default: DEFAULTS.retryBudgetMs, describe: 'ms (from its arrival) during which a command Redis did not run (-READONLY, -MASTERDOWN, -LOADING, or never written at a failover) is sent again rather than failed; 0 = never' },
  'connect-timeout': { type: 'number', default: DEFAULTS.connectTimeoutMs, describe: 'ms to open one upstream connection (TCP and handshake)' },
  'command-timeout': { type: 'number', default: DEFAULTS.commandTimeoutMs, describe: 'ms without any reply on a busy upstream connection before it is dropped and its commands fail (0 = never; blocking commands are exempt)' },
  'upstream-idle-timeout': { type: 'number', default: DEFAULTS.upstreamIdleTimeoutMs, describe: 'ms after which an idle upstream connection is closed (down to --min-idle)' },
  'reconnect-base': { type: 'number', default: DEFAULTS.reconnectBaseMs, describe: 'ms of the first backoff after a failed upstream connect (doubles per failure)' },
  'reconnect-max': { type: 'number', default: DEFAULTS.reconnectMaxMs, describe: 'ms of the longest backoff between upstream connect attempts' },
  'max-clients': { type: 'number', default: DEFAULTS.maxClients, describe: 'Most client connections at once' },
  'max-pipeline': { type: 'number', default: DEFAULTS.maxPipeline, describe: 'Most unanswered commands per client before respool stops reading from it' },
  'max-output-buffer': { type: 'number', describe: `Hard limit in bytes on replies buffered for one normal client, past which it is disconnected (the normal hard limit of --client-output-buffer-limit; default ${DEFAULTS.outputLimits.normal.hard})` },
  'client-output-buffer-limit': { type: 'string', default: formatOutputLimits(DEFAULTS.outputLimits), describe: 'Per-client output limits, Redis\'s syntax: <normal|pubsub> <hard> <soft> <soft seconds> … (sizes like 64mb; 0 = none): past hard, or above soft for longer than the seconds, the client is disconnected' },
  'maxmemory-clients': { type: 'string', default: 'auto', describe: 'One budget for all reply data respool holds for its clients (bytes, a size such as 256mb, or auto: half the container\'s memory limit, at most 256 MB; 0 = none); past it, the client holding the most is disconnected' },
  'max-bulk-length': { type: 'number', default: DEFAULTS.maxBulkLength, describe: 'Largest argument in bytes (Redis proto-max-bulk-len)' },
  'max-multibulk-length': { type: 'number', default: DEFAULTS.maxMultibulkLength, describe: 'Most arguments in one command' },
  'max-inline-length': { type: 'number', default: DEFAULTS.maxInlineLength, describe: 'Longest inline command line in bytes' },
  'client-idle-timeout': { type: 'number', default: DEFAULTS.clientIdleTimeoutMs, describe: 'ms after which a silent client is disconnected (0 = never)' },
  'workers': { type: 'number', default: DEFAULTS.workers, describe: 'Processes serving clients on the one listener (1 to 64); above 1, --pool-size, --min-idle, --max-pins, --max-clients and --maxmemory-clients are totals split between them. Worth it for a busy proxy with more than one free core' },
  'shutdown-grace': { type: 'number', default: DEFAULTS.shutdownGraceMs, describe: 'ms that in-flight work may take after SIGTERM/SIGINT before everything is closed' },
  'password': { type: 'string', describe: 'Clients must AUTH with this password before anything is forwarded (like requirepass)' },
  'password-file': { type: 'string', describe: 'Read --password from this file' },
  'user': { type: 'string', array: true, describe: 'A user clients may AUTH as, name:password (repeatable); implies AUTH is required' },
  'upstream-password': { type: 'string', describe: 'Password for the upstream (overrides the URL; keeps it out of URLs and process lists when set through the environment)' },
  'upstream-password-file': { type: 'string', describe: 'Read the upstream password from this file' },
  'upstream-tls-ca': { type: 'string', describe: 'CA certificate file (PEM) to verify a rediss:// upstream' },
  'upstream-tls-servername': { type: 'string', describe: 'TLS server name (SNI and verification) for a rediss:// upstream' },
  'upstream-tls-insecure': { type: 'boolean', describe: 'Do not verify the rediss:// upstream certificate (testing only)' },
  'tls-cert': { type: 'string', describe: 'Serve clients over TLS with this certificate (PEM); needs --tls-key' },
  'tls-key': { type: 'string', describe: 'Private key (PEM) for --tls-cert' },
  'unix-socket': { type: 'string', describe: 'Also listen on this unix socket path' },
  'deny-commands': { type: 'string', default: DEFAULTS.denyCommands.join(','), describe: 'Comma-separated commands refused for every client ("" allows all; SYNC, PSYNC and REPLCONF are always refused)' },
  'metrics-port': { type: 'number', describe: 'Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this port (off when unset)' },
  'metrics-host': { type: 'string', describe: 'Address for the HTTP endpoint (default: --host)' },
  'admin-password': { type: 'string', describe: 'Unlocks RESPOOL PAUSE/RESUME/RELOAD/KILL after RESPOOL AUTH; when set, every RESPOOL command needs it' },
  'park-blocking': { type: 'string', default: 'yes', describe: 'yes: blocking list, sorted-set and stream commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK …) wait inside respool without a connection each; no: each holds a pinned connection while it blocks' },
  'shared-pubsub': { type: 'string', default: 'yes', describe: 'yes: channel and pattern subscribers (SUBSCRIBE, PSUBSCRIBE) share one subscriber connection; no: each subscribed client holds a pinned connection' },
  'protected-mode': { type: 'string', default: 'yes', describe: 'yes: while no --password/--user is set, serve only loopback and unix-socket clients (others get -DENIED); no: serve every client that can reach --host' },
  'log-level': { type: 'string', default: DEFAULTS.logLevel, choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], describe: 'Log level (JSON logs on stdout)' }
}

/** The --config file: a JSON object whose keys are flag names. */
function readConfigFile (path: string): Record<string, unknown> {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(`config file ${path}: ${(err as Error).message}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${path}: expected a JSON object of options`)
  return parsed as Record<string, unknown>
}

/** Every flag also reads RESPOOL_<FLAG> from the environment (e.g. RESPOOL_POOL_SIZE=16). */
export function buildParser (argv: string[]) {
  return yargs(argv)
    .scriptName('respool')
    .usage('$0 [options]\n\nA Redis (RESP) proxy that multiplexes many client connections onto a small, bounded pool of upstream connections.\n\n' +
      '$0 bench [options]: measure pool sizes against your Redis and get a recommendation (respool bench --help)')
    .env('RESPOOL')
    // Precedence: flags, then RESPOOL_* environment variables, then the config file, then defaults.
    // Read with readFileSync, not require(): a reload (SIGHUP) must see the file as it is now.
    .config('config', 'JSON file of options, keys as the flag names (e.g. {"pool-size": 16, "upstream": "redis://…"})',
      readConfigFile)
    .strict()
    // Errors come back to main() as ConfigError: one clear line and exit code 2, not the whole help.
    .fail((message: string | null, err: Error | undefined) => {
      if (err instanceof ConfigError) throw err
      const text = message ?? err?.message ?? 'invalid options'
      const unknown = /^Unknown arguments?: (.*)$/.exec(text)
      // yargs lists each unknown name twice (as given, and camelCased); keep the spelling given.
      const names: string[] = []
      const camelCased = new Set<string>()
      for (const name of unknown?.[1].split(', ') ?? []) {
        if (camelCased.has(name)) continue
        names.push(name)
        camelCased.add(name.replace(/-([a-zA-Z0-9])/g, (_, c: string) => c.toUpperCase()))
      }
      throw new ConfigError(unknown !== null
        ? `unknown option${names.length > 1 ? 's' : ''} ${names.join(', ')} (a flag or a key in the --config file)`
        : text)
    })
    .options(FLAGS)
    .epilogue('Every option can also be set as an environment variable: RESPOOL_POOL_SIZE=16, RESPOOL_UPSTREAM=redis://…')
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
}

/** Maps parsed flags to proxy options (pure: unit-tested without a process). */
export function optionsFromArgs (args: Record<string, unknown>): ProxyOptions {
  return {
    host: args.host as string,
    port: args.port as number,
    upstream: args.upstream as string,
    sentinels: args.sentinel as string[] | undefined,
    cluster: args.cluster as string[] | undefined,
    sentinelMaster: args.sentinelMaster as string | undefined,
    sentinelUsername: args.sentinelUser as string | undefined,
    sentinelPassword: args.sentinelPassword as string | undefined,
    sentinelPasswordFile: args.sentinelPasswordFile as string | undefined,
    sentinelTls: yesNo('sentinel-tls', args.sentinelTls),
    poolSize: args.poolSize as number,
    maxPins: args.maxPins as number | undefined,
    minIdle: args.minIdle as number,
    acquireTimeoutMs: args.acquireTimeout as number,
    retryBudgetMs: args.retryBudget as number,
    connectTimeoutMs: args.connectTimeout as number,
    commandTimeoutMs: args.commandTimeout as number,
    upstreamIdleTimeoutMs: args.upstreamIdleTimeout as number,
    reconnectBaseMs: args.reconnectBase as number,
    reconnectMaxMs: args.reconnectMax as number,
    maxClients: args.maxClients as number,
    maxPipeline: args.maxPipeline as number,
    maxOutputBufferBytes: args.maxOutputBuffer as number | undefined,
    outputLimits: args.clientOutputBufferLimit as string,
    maxMemoryClients: args.maxmemoryClients as string,
    maxBulkLength: args.maxBulkLength as number,
    maxMultibulkLength: args.maxMultibulkLength as number,
    maxInlineLength: args.maxInlineLength as number,
    clientIdleTimeoutMs: args.clientIdleTimeout as number,
    shutdownGraceMs: args.shutdownGrace as number,
    workers: args.workers as number,
    logLevel: args.logLevel as string,
    password: args.password as string | undefined,
    passwordFile: args.passwordFile as string | undefined,
    users: args.user as string[] | undefined,
    upstreamPassword: args.upstreamPassword as string | undefined,
    upstreamPasswordFile: args.upstreamPasswordFile as string | undefined,
    upstreamTlsCa: args.upstreamTlsCa as string | undefined,
    upstreamTlsServername: args.upstreamTlsServername as string | undefined,
    upstreamTlsInsecure: args.upstreamTlsInsecure as boolean | undefined,
    tlsCert: args.tlsCert as string | undefined,
    tlsKey: args.tlsKey as string | undefined,
    unixSocket: args.unixSocket as string | undefined,
    denyCommands: (args.denyCommands as string).split(','),
    metricsPort: args.metricsPort as number | undefined,
    metricsHost: args.metricsHost as string | undefined,
    adminPassword: args.adminPassword as string | undefined,
    protectedMode: yesNo('protected-mode', args.protectedMode),
    parkBlocking: yesNo('park-blocking', args.parkBlocking),
    sharedPubsub: yesNo('shared-pubsub', args.sharedPubsub)
  }
}

/** yes/no (also true/false, on/off, as Redis and JSON config files spell them). */
function yesNo (flag: string, value: unknown): boolean {
  const text = String(value).toLowerCase()
  if (text === 'yes' || text === 'true' || text === 'on') return true
  if (text === 'no' || text === 'false' || text === 'off') return false
  throw new ConfigError(`${flag}: must be yes or no, got ${String(value)}`)
}

/**
 * RESPOOL_* variables that set no flag are taken out of the environment (yargs would stop on
 * them as "Unknown argument: poolsize", which does not say where it came from) and returned,
 * each with the variable it was probably meant to be. respool warns and goes on: a variable
 * left over in a deployment's environment must not keep the proxy from starting. Unknown flags
 * and config-file keys still stop it: those are typed by whoever starts it.
 */
export function dropUnknownEnv (env: NodeJS.ProcessEnv = process.env): Array<{ name: string, meant: string | null }> {
  const dropped: Array<{ name: string, meant: string | null }> = []
  for (const name of Object.keys(env)) {
    if (!name.startsWith('RESPOOL_')) continue
    const flag = envToFlag(name)
    if (Object.hasOwn(FLAGS, flag) || flag === 'config') continue
    const squeezed = flag.replace(/-/g, '')
    const meant = Object.keys(FLAGS).find((f) => f.replace(/-/g, '') === squeezed)
    dropped.push({ name, meant: meant === undefined ? null : `RESPOOL_${meant.toUpperCase().replace(/-/g, '_')}` })
    delete env[name]
  }
  return dropped
}

/** Parses flags, environment and config file into proxy options. */
export async function loadOptions (argv: string[]): Promise<ProxyOptions> {
  for (const { name, meant } of dropUnknownEnv()) {
    process.stderr.write(`respool: warning: ignoring unknown environment variable ${name}${meant !== null ? ` (did you mean ${meant}?)` : ''}: every RESPOOL_* variable sets the flag of the same name (RESPOOL_POOL_SIZE is --pool-size)\n`)
  }
  return optionsFromArgs(await buildParser(hideBin(argv)).parseAsync())
}

/** RESPOOL_POOL_SIZE → pool-size */
function envToFlag (name: string): string {
  return name.slice('RESPOOL_'.length).toLowerCase().replace(/_/g, '-')
}

/**
 * Kubernetes gives every pod variables for each Service in its namespace. A Service named
 * "respool" (or "respool-metrics", "respool-headless" …) yields RESPOOL_SERVICE_HOST,
 * RESPOOL_METRICS_SERVICE_PORT, RESPOOL_PORT=tcp://10.0.0.7:6380, RESPOOL_METRICS_PORT=tcp://…,
 * RESPOOL_PORT_6380_TCP…, which look like respool settings and are not. They are taken out of
 * the environment before it is read (and named in a warning), so they neither stop respool nor
 * set its ports. No respool setting takes a tcp:// address.
 */
export function dropServiceLinks (env: NodeJS.ProcessEnv = process.env): string[] {
  const dropped = Object.keys(env).filter((name) => name.startsWith('RESPOOL_') && (
    /^RESPOOL(_[A-Z0-9_]+)?_SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?$/.test(name) ||
    /^RESPOOL(_[A-Z0-9_]+)?_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$/.test(name) ||
    /^(tcp|udp|sctp):\/\/\S+:\d+$/.test(env[name] ?? '')))
  for (const name of dropped) delete env[name]
  return dropped
}

export async function main (argv: string[] = process.argv): Promise<void> {
  const args = hideBin(argv)
  if (args[0] === 'bench') {
    const { benchMain } = await import('./bench/cli.js')
    await benchMain(args.slice(1))
    return
  }
  // A worker of --workers N (forked by the primary with the same flags and environment).
  const worker = cluster.isWorker ? workerIdentity() : null
  // A worker holds an IPC channel that keeps it alive: it ends with an explicit exit.
  const finish = (code: number): void => {
    if (worker !== null) process.exit(code)
    process.exitCode = code
  }
  let server: ProxyServer
  try {
    const serviceLinks = dropServiceLinks()
    const options = await loadOptions(argv)
    if (worker === null) {
      const total = checkWorkerShares(options)
      if (total.workers > 1) {
        const log = createLogger(total.logLevel)
        warnServiceLinks(log, serviceLinks)
        const code = await new WorkerPrimary(total, log, async () => checkWorkerShares(await loadOptions(argv))).run()
        log.flush()
        process.exit(code)
      }
    }
    const config = worker === null ? validateConfig(options) : workerConfig(options, worker.index, worker.count)
    const logger = createLogger(config.logLevel)
    server = worker === null
      ? new ProxyServer(config, { logger })
      : new ProxyServer(config, { logger: logger.child({ worker: worker.index }), clientIds: { first: worker.index + 1, step: worker.count }, serveHttp: false, removeStaleSocket: false })
    server.reloadSource = worker === null
      ? async () => await loadOptions(argv)
      : async () => workerConfig(await loadOptions(argv), worker.index, worker.count) as unknown as ProxyOptions
    warnServiceLinks(server.log, serviceLinks)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`respool: ${err.message}\nRun 'respool --help' for the options.\n`)
      finish(2)
      return
    }
    throw err
  }
  // Handlers go in before the start line is logged: whoever reads that line may signal at once,
  // and a SIGHUP with no handler would kill the process (its default action).
  let drained = false
  const drain = (reason: string): void => {
    if (drained) return
    drained = true
    server.log.info({ reason }, 'draining: no new clients; finishing in-flight commands')
    server.close().then(() => {
      server.log.info('drained; exiting')
      server.log.flush()
      process.exit(0)
    }, (err: Error) => {
      server.log.error({ err: err.message }, 'error while draining')
      process.exit(1)
    })
  }
  let signals = 0
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++
    if (signals > 1) {
      server.log.warn({ signal }, 'second signal: exiting now')
      process.exit(1)
    }
    drain(signal)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  // SIGHUP: read flags, environment and config file again; apply what can change safely.
  process.on('SIGHUP', () => { server.reloadFromSource().catch(() => {}) })
  if (worker !== null) attachToPrimary(server, drain)
  try {
    await server.listen()
  } catch (err) {
    if (err instanceof ConfigError) {
      // Found at start, not in the flags (a sentinel refusing respool's credentials).
      process.stderr.write(`respool: ${err.message}\n`)
      await server.destroy()
      finish(2)
      return
    }
    process.stderr.write(`respool: cannot listen on ${server.config.host}:${server.config.port}: ${(err as Error).message}\n`)
    finish(1)
    return
  }
  if (worker !== null) reportListening(server)
}

function warnServiceLinks (log: Logger, serviceLinks: string[]): void {
  if (serviceLinks.length === 0) return
  log.warn({ ignored: serviceLinks }, 'ignoring Kubernetes service-link variables that look like RESPOOL_* settings (from a Service named respool or respool-…; enableServiceLinks: false turns them off)')
}
