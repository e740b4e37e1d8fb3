import commands from '@ioredis/commands'
import type { RespCommand } from '../protocol/resp-command.js'

/**
 * How the proxy treats each command. Most commands are `SHARED`: multiplexed on a shared,
 * pipelined upstream connection. Unknown commands (modules, newer Redis) are SHARED too: a
 * sidecar should be transparent, and Redis answers what it does not know. Only commands that
 * change the connection or hold it get another class.
 *
 * Blocking commands are found through the `blocking` flag of the maintained command table in
 * `@ioredis/commands`; the lists below are the overrides that metadata cannot express
 * (connection state, transactions, subscriber mode, argument-dependent blocking).
 */
export const Kind = {
  SHARED: 0,
  /** Holds the connection until Redis answers (BLPOP …, XREAD BLOCK, WAIT). */
  BLOCKING: 1,
  MULTI: 2,
  EXEC: 3,
  DISCARD: 4,
  WATCH: 5,
  UNWATCH: 6,
  /** SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: the connection becomes a message stream. */
  SUBSCRIBE: 7,
  /** UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE. */
  UNSUBSCRIBE: 8,
  MONITOR: 9,
  SELECT: 10,
  AUTH: 11,
  HELLO: 12,
  CLIENT: 13,
  READONLY: 14,
  READWRITE: 15,
  RESET: 16,
  QUIT: 17,
  /** Replication streams: never proxied (they would take over a shared connection). */
  DENIED: 18,
  /** Changes the connection's state in ways the proxy does not track (so it needs a dedicated connection). */
  STATEFUL: 19
} as const
export type CommandKind = typeof Kind[keyof typeof Kind]

const OVERRIDES: ReadonlyMap<string, CommandKind> = new Map<string, CommandKind>([
  ['multi', Kind.MULTI],
  ['exec', Kind.EXEC],
  ['discard', Kind.DISCARD],
  ['watch', Kind.WATCH],
  ['unwatch', Kind.UNWATCH],
  ['subscribe', Kind.SUBSCRIBE],
  ['psubscribe', Kind.SUBSCRIBE],
  ['ssubscribe', Kind.SUBSCRIBE],
  ['unsubscribe', Kind.UNSUBSCRIBE],
  ['punsubscribe', Kind.UNSUBSCRIBE],
  ['sunsubscribe', Kind.UNSUBSCRIBE],
  ['monitor', Kind.MONITOR],
  ['select', Kind.SELECT],
  ['auth', Kind.AUTH],
  ['hello', Kind.HELLO],
  ['client', Kind.CLIENT],
  ['readonly', Kind.READONLY],
  ['readwrite', Kind.READWRITE],
  ['reset', Kind.RESET],
  ['quit', Kind.QUIT],
  // Replication streams: a replica's handshake would turn a shared connection into a data feed.
  // (SHUTDOWN, DEBUG … are refused by the configurable deny list, --deny-commands.)
  ['sync', Kind.DENIED],
  ['psync', Kind.DENIED],
  ['replconf', Kind.DENIED],
  // Switch a connection's mode in ways a shared connection must never see.
  ['asking', Kind.STATEFUL],
  ['swapdb', Kind.SHARED]
])

const BLOCKING_FLAG: ReadonlySet<string> = new Set(commands.list.filter((name) => commands.hasFlag(name, 'blocking')))
/** Blocking only when a BLOCK option is present. */
const BLOCK_OPTION = new Set(['xread', 'xreadgroup'])

/** Classifies a command by its name and, where it matters, its arguments. */
export function classify (cmd: RespCommand): CommandKind {
  const name = cmd.name
  const override = OVERRIDES.get(name)
  if (override !== undefined) return override
  if (BLOCK_OPTION.has(name)) return hasBlockOption(cmd) ? Kind.BLOCKING : Kind.SHARED
  if (BLOCKING_FLAG.has(name)) return Kind.BLOCKING
  return Kind.SHARED
}

function hasBlockOption (cmd: RespCommand): boolean {
  return blockOptionIndex(cmd) !== -1
}

/**
 * Where XREAD's / XREADGROUP's BLOCK keyword is (-1 if absent). Options come before STREAMS,
 * each keyword followed by its value (NOACK alone); XREADGROUP's GROUP <group> <consumer> comes
 * first, so a group or consumer named "block" is not the option.
 */
export function blockOptionIndex (cmd: RespCommand): number {
  let i = cmd.name === 'xreadgroup' && cmd.keyword(1) === 'group' ? 4 : 1
  while (i < cmd.argc) {
    const word = cmd.keyword(i)
    if (word === 'streams') return -1
    if (word === 'block') return i
    i += word === 'noack' ? 1 : 2
  }
  return -1
}
