import { createRequire } from 'node:module'
import { errorReply } from '../protocol/resp-encode.js'
import type { RespCommand } from '../protocol/resp-command.js'

/**
 * What Redis answers a RESP2 client in subscriber mode that sends anything but
 * (P|S)(UN)SUBSCRIBE, PING, QUIT or RESET. A client subscribed through the shared fan-out has
 * no connection of its own to ask, so respool answers in Redis's order: an unknown command, an
 * unknown subcommand and a wrong number of arguments are reported first, then the refusal.
 * PING answers the subscriber-mode way, `*2 $4 pong $n <argument or empty>`.
 */

interface CommandInfo { arity: number, subcommands?: Record<string, { arity: number }> }
const TABLE = createRequire(import.meta.url)('@ioredis/commands/built/commands.json') as Record<string, CommandInfo>

export function subscribedContextReply (cmd: RespCommand): Buffer {
  const name = cmd.name
  const info = Object.prototype.hasOwnProperty.call(TABLE, name) ? TABLE[name] : undefined
  if (info === undefined) {
    let args = ''
    for (let i = 1; i < cmd.argc && args.length < 128; i++) args += `'${cmd.argString(i).slice(0, 128 - args.length)}' `
    return refusal(`ERR unknown command '${cmd.argString(0).slice(0, 128)}', with args beginning with: ${args}`)
  }
  let fullname = name
  let arity = info.arity
  if (info.subcommands !== undefined && cmd.argc >= 2) {
    const sub = cmd.keyword(1)
    const subInfo = Object.prototype.hasOwnProperty.call(info.subcommands, sub) ? info.subcommands[sub] : undefined
    if (subInfo === undefined) return refusal(`ERR unknown subcommand '${cmd.argString(1).slice(0, 128)}'. Try ${name.toUpperCase()} HELP.`)
    fullname = `${name}|${sub}`
    arity = subInfo.arity
  }
  if ((arity > 0 && cmd.argc !== arity) || cmd.argc < -arity) return refusal(`ERR wrong number of arguments for '${fullname}' command`)
  if (name === 'ping') {
    if (cmd.argc > 2) return refusal("ERR wrong number of arguments for 'ping' command")
    const arg = cmd.argc > 1 ? cmd.arg(1) : Buffer.alloc(0)
    return Buffer.concat([Buffer.from(`*2\r\n$4\r\npong\r\n$${arg.length}\r\n`), arg, Buffer.from('\r\n')])
  }
  return refusal(`ERR Can't execute '${fullname}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`)
}

/** Redis turns newlines in an error into spaces. */
function refusal (text: string): Buffer {
  return errorReply(text.replace(/[\r\n]/g, ' '))
}
