import commands from '@ioredis/commands'
import type { RespCommand } from '../protocol/resp-command.js'

/**
 * When a shared-lane command is sent again instead of failing its client.
 *
 * Redis checks these before it runs a command, so a command answered with one of them did not
 * run: a replica refusing a write (-READONLY, also a script's write on a replica), a replica
 * cut off from its master with `replica-serve-stale-data no` (-MASTERDOWN), a server still
 * loading its dataset after a restart (-LOADING). A command whose bytes never left respool
 * before its connection closed did not run either. Anything else in flight when a connection
 * dies may or may not have run, and gets one error.
 */
const REFUSALS = ['-READONLY ', '-MASTERDOWN ', '-LOADING '].map((p) => Buffer.from(p))

/** The refusal Redis gives while it loads its dataset: wait a little, then try again. */
const LOADING = REFUSALS[2]

/** Most times a command is sent again (the time budget is --retry-budget). */
export const RETRY_MAX_ATTEMPTS = 50
/** First pause before a -LOADING or -MASTERDOWN refusal is tried again; it doubles each time. */
const BACKOFF_FIRST_MS = 25
const BACKOFF_MAX_MS = 500

/** Whether an error reply says Redis did not run the command (-READONLY, -MASTERDOWN, -LOADING). */
export function isRefusal (frame: Buffer): boolean {
  for (const prefix of REFUSALS) {
    if (frame.length >= prefix.length && frame.compare(prefix, 0, prefix.length, 0, prefix.length) === 0) return true
  }
  return false
}

/**
 * How long to wait before a refused command is sent again. A replica's refusal (-READONLY) waits
 * for nothing more: the topology has already moved on, and the command waits for a connection to
 * the new master. A node that is loading, or cut off from its master, is asked again after a
 * pause that doubles with each attempt.
 */
export function backoffMs (refusal: Buffer | null, attempt: number): number {
  if (refusal === null || refusal.length < 3 || refusal[1] === 0x52 /* R */) return 0
  const first = refusal.compare(LOADING, 0, LOADING.length, 0, LOADING.length) === 0 ? BACKOFF_FIRST_MS : BACKOFF_FIRST_MS * 2
  return Math.min(BACKOFF_MAX_MS, first * 2 ** Math.max(0, attempt - 1))
}

/** Commands that change nothing: one that ran behind a refused command may simply run again after it. */
const HARMLESS = new Set(['ping', 'echo', ...commands.list.filter((name) => commands.hasFlag(name, 'readonly'))])

/**
 * A command of the same client that ran on the node after a command of its was refused there.
 * Sending the refused one again would put it after this one (the client's order broken), unless
 * this one changes nothing and is sent again too.
 */
export function runsAgainHarmlessly (cmd: RespCommand | null): boolean {
  return cmd !== null && HARMLESS.has(cmd.name)
}
