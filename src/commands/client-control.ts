import { errorReply } from '../protocol/resp-encode.js'
import { parseRedisInteger } from '../protocol/redis-integer.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ClientView } from './local-commands.js'

/**
 * CLIENT UNBLOCK and CLIENT KILL on respool's own clients, with respool's client ids (those
 * CLIENT ID and CLIENT LIST show), and Redis 7's argument rules and error texts. Redis's own
 * ids of respool's upstream connections are never accepted: no client can reach another
 * application's connection by guessing them.
 */

export type UnblockMode = 'timeout' | 'error'

/** CLIENT UNBLOCK <id> [TIMEOUT|ERROR]: the target and mode, or Redis's error. */
export function parseUnblock (cmd: RespCommand): { id: number, mode: UnblockMode } | Buffer {
  if (cmd.argc !== 3 && cmd.argc !== 4) return errorReply("ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.")
  const id = parseRedisInteger(cmd.argString(2))
  if (id === null) return errorReply('ERR value is not an integer or out of range')
  let mode: UnblockMode = 'timeout'
  if (cmd.argc === 4) {
    const word = cmd.keyword(3)
    if (word !== 'timeout' && word !== 'error') return errorReply('ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR')
    mode = word
  }
  return { id: Number(id), mode }
}

/** What a blocked client gets when CLIENT UNBLOCK … ERROR ends its command. */
export const UNBLOCKED_ERROR = errorReply('UNBLOCKED client unblocked via CLIENT UNBLOCK')

export interface KillFilters {
  id?: number
  type?: 'normal' | 'pubsub' | 'none'
  user?: string
  addr?: string
  laddr?: string
  /** Clients older than this many seconds (Redis 7.4's MAXAGE). */
  maxAge?: number
  skipMe: boolean
}

/**
 * CLIENT KILL ip:port (the old form: +OK or "No such client") or CLIENT KILL <filter> <value> …
 * (the new form: the number of clients closed).
 */
export function parseKill (cmd: RespCommand): { old: string } | KillFilters | Buffer {
  if (cmd.argc < 3) return errorReply("ERR wrong number of arguments for 'client|kill' command")
  if (cmd.argc === 3) return { old: cmd.argString(2) }
  const filters: KillFilters = { skipMe: true }
  for (let i = 2; i < cmd.argc; i += 2) {
    if (i + 1 >= cmd.argc) return errorReply('ERR syntax error')
    const value = cmd.argString(i + 1)
    switch (cmd.keyword(i)) {
      case 'id': {
        const id = parseRedisInteger(value)
        if (id === null || id <= 0n) return errorReply('ERR client-id should be greater than 0')
        filters.id = Number(id)
        break
      }
      case 'type': {
        const type = value.toLowerCase()
        if (type === 'normal' || type === 'pubsub') filters.type = type
        else if (type === 'master' || type === 'replica' || type === 'slave') filters.type = 'none' // respool serves neither
        else return errorReply(`ERR Unknown client type '${value}'`)
        break
      }
      case 'user':
        filters.user = value
        break
      case 'addr':
        filters.addr = value
        break
      case 'laddr':
        filters.laddr = value
        break
      case 'skipme': {
        const yes = value.toLowerCase()
        if (yes !== 'yes' && yes !== 'no') return errorReply('ERR syntax error')
        filters.skipMe = yes === 'yes'
        break
      }
      case 'maxage': {
        const age = parseRedisInteger(value)
        if (age === null) return errorReply('ERR syntax error')
        filters.maxAge = Number(age)
        break
      }
      default:
        return errorReply('ERR syntax error')
    }
  }
  return filters
}

/** Whether a client matches every filter given (`callerId`: the client asking). */
export function killMatches (view: ClientView, filters: KillFilters, callerId: number): boolean {
  if (filters.skipMe && view.id === callerId) return false
  if (filters.id !== undefined && view.id !== filters.id) return false
  if (filters.type !== undefined) {
    const pubsub = view.sub + view.psub + view.ssub > 0
    if (filters.type === 'none' || (filters.type === 'pubsub') !== pubsub) return false
  }
  if (filters.user !== undefined && view.state.user !== filters.user) return false
  if (filters.addr !== undefined && view.addr !== filters.addr) return false
  if (filters.laddr !== undefined && view.laddr !== filters.laddr) return false
  if (filters.maxAge !== undefined && filters.maxAge !== 0 && view.ageSeconds <= filters.maxAge) return false
  return true
}
