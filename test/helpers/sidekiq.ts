import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { setTimeout as delay } from 'node:timers/promises'
import { runProgram } from './run-program.js'

/**
 * Running Debian's Sidekiq 6.4 in tests: the executable, an enqueue script using Sidekiq's own
 * client (push_bulk of CountingJob with args FROM..TO, printing the jids), and a poll helper.
 */

/** Enqueues CountingJob FROM..TO (ARGV) through Sidekiq's client and prints their jids as JSON. */
export const SIDEKIQ_ENQUEUE = `
require 'sidekiq'
require 'json'
from, to = Integer(ARGV[0]), Integer(ARGV[1])
jids = Sidekiq::Client.push_bulk('class' => 'CountingJob', 'args' => (from..to).map { |i| [i] })
puts JSON.generate(jids)
`

/** How to run the sidekiq executable: on PATH, or through `ruby -S`. */
export function sidekiqCommand (): [string, string[]] {
  const which = spawnSync('which', ['sidekiq'], { encoding: 'utf8' })
  if (which.status === 0 && which.stdout.trim() !== '') return [which.stdout.trim(), []]
  return ['ruby', ['-S', 'sidekiq']]
}

/** Enqueues jobs FROM..TO with Sidekiq's client (REDIS_URL in `env`) and returns their jids. */
export async function enqueueJobs (cwd: string, env: NodeJS.ProcessEnv, from: number, to: number): Promise<string[]> {
  const r = await runProgram('ruby', ['-', String(from), String(to)], { cwd, env, input: SIDEKIQ_ENQUEUE, timeoutMs: 20000 })
  const stdout = r.stdout.toString()
  assert.equal(r.code, 0, `enqueue exited ${String(r.code ?? r.signal)}: ${stdout} ${r.stderr}`)
  const jids = JSON.parse(stdout.trim()) as string[]
  assert.equal(jids.length, to - from + 1)
  return jids
}

/** Polls until `cond` holds or the deadline passes; `fail` is checked each round to stop early. */
export async function until (cond: () => Promise<boolean> | boolean, what: string | (() => string), timeoutMs: number, fail?: () => string | null): Promise<void> {
  const deadline = Date.now() + timeoutMs
  const describe = (): string => typeof what === 'string' ? what : what()
  while (!(await cond())) {
    const reason = fail?.()
    if (reason != null) throw new Error(`${describe()}: ${reason}`)
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${describe()}`)
    await delay(25)
  }
}
