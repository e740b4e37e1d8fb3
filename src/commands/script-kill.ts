import type { RespCommand } from '../protocol/resp-command.js'

/**
 * SCRIPT KILL and FUNCTION KILL, which Redis answers even while a script keeps it busy. On a
 * connection that has other commands in flight they would wait behind that very script, so
 * respool sends them on a connection with nothing in flight.
 */
export function isScriptKill (cmd: RespCommand): boolean {
  return (cmd.name === 'script' || cmd.name === 'function') && cmd.argc === 2 && cmd.keyword(1) === 'kill'
}
