import { writeFileSync } from 'node:fs'
import yargs from 'yargs'
import { redactUrl } from '../config.js'
import { BenchRefused, DEFAULT_UPSTREAM, runBench, type BenchOptions, type BenchResult } from './run.js'
import { asciiChart, formatTable, formatTableRow, htmlReport, progressLine } from './report.js'

/**
 * `respool bench`: measures respool's pool against the user's own Redis and recommends a pool
 * size. Its own flags (no RESPOOL_* environment, no config file): it is run by hand.
 */
export function buildBenchParser (argv: string[]) {
  return yargs(argv)
    .scriptName('respool bench')
    .usage('$0 [options]\n\nMeasures throughput, latency and pool waits over a sweep of client concurrency and pool sizes, and recommends a pool size.\n' +
      'By default it runs a respool in this process against --upstream; --target measures a respool already running.\n' +
      'It writes only keys under respool-bench:<random>: and deletes them at the end (also on Ctrl-C).')
    .strict()
    .fail((message: string | null, err: Error | undefined) => { throw new BenchRefused(message ?? err?.message ?? 'invalid options') })
    .options({
      'upstream': { type: 'string', describe: `Redis to measure against: redis://[user:pass@]host:port[/db], rediss://…, unix:///path?db=n (default ${DEFAULT_UPSTREAM}; with --target, optional: where INFO and DBSIZE are read, else through the target)` },
      'target': { type: 'string', describe: 'Measure a running respool at host:port (or redis://…) instead of one in this process; its pool size is read from RESPOOL POOLS' },
      'clients': { type: 'string', default: '10,50,200', describe: 'Client connections, comma-separated: one column of the sweep each' },
      'pool-sizes': { type: 'string', default: '2,4,8,16', describe: 'Pool sizes of the in-process respool, comma-separated (not with --target)' },
      'duration': { type: 'number', default: 4, describe: 'Seconds measured per cell' },
      'warmup': { type: 'number', default: 0.5, describe: 'Seconds of load before each cell is measured' },
      'pipeline': { type: 'number', default: 1, describe: 'Commands each client writes at once before waiting for their replies' },
      'get-ratio': { type: 'number', default: 0.8, describe: 'Share of GET among GET/SET commands' },
      'value-size': { type: 'number', default: 100, describe: 'Bytes per SET value' },
      'keys': { type: 'number', default: 1000, describe: 'Distinct GET/SET keys' },
      'multi': { type: 'number', default: 0.05, describe: 'Share of operations that are transactions' },
      'tx-style': { type: 'string', choices: ['watch', 'pipelined'], default: 'watch', describe: 'watch: WATCH k, GET k, then MULTI SET INCR EXEC (respool pins a connection for each); pipelined: MULTI … EXEC in one write (no pin)' },
      'blocking': { type: 'number', default: 0.05, describe: 'Share of clients that wait in BLPOP (1 s timeout) on a key of their own; the same share of operations are RPUSHes that wake them' },
      'max-ops': { type: 'number', default: 0, describe: 'Most operations per second for all clients together (0: no cap)' },
      'target-p99': { type: 'number', describe: 'p99 in ms the recommended pool size must meet' },
      'json': { type: 'boolean', default: false, describe: 'Print the result as JSON on stdout (progress still on stderr)' },
      'report': { type: 'string', describe: 'Also write an HTML report (charts, table, recommendation) to this file' },
      'yes': { type: 'boolean', default: false, describe: 'Run even if the database already holds keys (the benchmark touches only its own)' }
    })
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
}

function intList (flag: string, text: string, min: number): number[] {
  const values = text.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number)
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v < min || v > 100000)) {
    throw new BenchRefused(`--${flag}: expected comma-separated integers of at least ${min}, got ${text}`)
  }
  return [...new Set(values)].sort((a, b) => a - b)
}

function share (flag: string, value: number): number {
  if (!Number.isFinite(value) || value < 0 || value > 1) throw new BenchRefused(`--${flag}: expected a share from 0 to 1, got ${value}`)
  return value
}

function positive (flag: string, value: number, integer: boolean): number {
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) throw new BenchRefused(`--${flag}: expected a positive ${integer ? 'integer' : 'number'}, got ${value}`)
  return value
}

/** Parsed flags to run options (pure: unit-tested without a process). */
export function benchOptionsFromArgs (args: Record<string, unknown>, given: Set<string>): BenchOptions {
  if (args.target !== undefined && given.has('pool-sizes')) {
    throw new BenchRefused('--pool-sizes cannot be used with --target: the running respool has its own pool size (the benchmark reads it)')
  }
  const multiShare = share('multi', args.multi as number)
  const blockingShare = share('blocking', args.blocking as number)
  if (multiShare + blockingShare > 1) throw new BenchRefused('--multi and --blocking together must be at most 1')
  const maxOps = args.maxOps as number
  if (!Number.isFinite(maxOps) || maxOps < 0) throw new BenchRefused(`--max-ops: expected 0 (no cap) or a positive rate, got ${maxOps}`)
  const warmup = args.warmup as number
  if (!Number.isFinite(warmup) || warmup < 0) throw new BenchRefused(`--warmup: expected seconds, got ${warmup}`)
  return {
    upstream: args.upstream as string | undefined,
    target: args.target as string | undefined,
    clients: intList('clients', args.clients as string, 1),
    poolSizes: intList('pool-sizes', args.poolSizes as string, 2),
    durationSec: positive('duration', args.duration as number, false),
    warmupSec: warmup,
    pipeline: positive('pipeline', args.pipeline as number, true),
    getRatio: share('get-ratio', args.getRatio as number),
    valueSize: positive('value-size', args.valueSize as number, true),
    keys: positive('keys', args.keys as number, true),
    multiShare,
    txStyle: args.txStyle as 'watch' | 'pipelined',
    blockingShare,
    maxOps,
    targetP99Ms: args.targetP99 === undefined ? undefined : positive('target-p99', args.targetP99 as number, false),
    yes: args.yes as boolean
  }
}

export async function benchMain (argv: string[]): Promise<void> {
  let options: BenchOptions
  let args: Record<string, unknown>
  try {
    args = await buildBenchParser(argv).parseAsync()
    const given = new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]))
    options = benchOptionsFromArgs(args, given)
  } catch (err) {
    process.stderr.write(`respool bench: ${(err as Error).message}\nRun 'respool bench --help' for the options.\n`)
    process.exitCode = 2
    return
  }
  const json = args.json as boolean
  const reportPath = args.report as string | undefined
  const out = process.stdout
  const err = process.stderr
  const tty = err.isTTY
  const cellSeconds = options.warmupSec + options.durationSec + 0.3

  // Ctrl-C and SIGTERM stop the load and delete the benchmark's keys before exiting; a second
  // signal exits at once.
  const controller = new AbortController()
  let interrupted: NodeJS.Signals | null = null
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted !== null) process.exit(1)
    interrupted = signal
    clearProgress()
    err.write(`respool bench: ${signal}: stopping and deleting the benchmark's keys (again to exit at once)\n`)
    controller.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  let progress: NodeJS.Timeout | null = null
  let cellIndex = 0
  let cellTotal = 1
  let cellLabel = 'connecting'
  let cellStartedAt = performance.now()
  const drawProgress = (): void => {
    const inCell = Math.min(1, (performance.now() - cellStartedAt) / 1000 / cellSeconds)
    const left = (cellTotal - cellIndex - inCell) * cellSeconds
    err.write(`\r\x1b[K${progressLine(cellIndex + inCell, cellTotal, cellLabel, left)}`)
  }
  function clearProgress (): void {
    if (tty) err.write('\r\x1b[K')
  }
  if (tty) progress = setInterval(drawProgress, 200)

  let headerPrinted = false
  let result: BenchResult
  try {
    result = await runBench(options, {
      signal: controller.signal,
      onPrefix: (prefix) => {
        if (!json) {
          clearProgress()
          const what = options.target !== undefined ? `the respool at ${redactUrl(options.target)}` : `respool in this process against ${redactUrl(options.upstream ?? DEFAULT_UPSTREAM)}`
          out.write(`respool bench: ${what}; keys under ${prefix}\n`)
        }
      },
      onCellStart: (index, total, cell) => {
        cellIndex = index
        cellTotal = total
        cellLabel = `pool ${cell.poolSize} × ${cell.clients} clients`
        cellStartedAt = performance.now()
      },
      onCellDone: (cell) => {
        if (json) return
        clearProgress()
        if (!headerPrinted) {
          out.write('\n' + formatTable([]))
          headerPrinted = true
        }
        out.write(formatTableRow(cell) + '\n')
      }
    })
  } catch (e) {
    if (progress !== null) clearInterval(progress)
    clearProgress()
    if (interrupted !== null) {
      err.write('respool bench: interrupted; the benchmark\'s keys were deleted\n')
      process.exitCode = interrupted === 'SIGINT' ? 130 : 143
      return
    }
    err.write(`respool bench: ${(e as Error).message}\n`)
    process.exitCode = e instanceof BenchRefused ? 2 : 1
    return
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  if (progress !== null) clearInterval(progress)
  clearProgress()
  if (reportPath !== undefined) writeFileSync(reportPath, htmlReport(result))
  if (json) {
    out.write(JSON.stringify(result, null, 2) + '\n')
    return
  }
  const rec = result.recommendation
  out.write('\n' + asciiChart(result.cells, rec.poolSize))
  const errors = result.cells.filter((c) => c.firstError !== null)
  if (errors.length > 0) out.write(`\nErrors (first of each cell): ${errors.map((c) => `pool ${c.poolSize} × ${c.clients}: ${c.firstError}`).join('; ')}\n`)
  out.write(`\nRecommendation: --pool-size ${rec.poolSize ?? '?'}. ${rec.reason}\n`)
  if (reportPath !== undefined) out.write(`Report: ${reportPath}\n`)
  out.write(`Cleanup: deleted ${result.cleanup.deleted} keys under ${result.prefix}${result.cleanup.left > 0 ? `, ${result.cleanup.left} left` : ', none left'}.\n`)
}
