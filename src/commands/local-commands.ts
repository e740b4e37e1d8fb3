import { encodeValue, errorReply, integer, nullReply, OK, verbatim } from '../protocol/resp-encode.js'
import { RespCommand } from '../protocol/resp-command.js'
import { parseRedisInteger } from '../protocol/redis-integer.js'
import type { SessionState } from '../client/session-state.js'
import type { ServerInfo } from '../upstream/server-info.js'

/**
 * Commands about the client's own connection, answered by respool the way Redis answers them
 * on a direct connection. Pure functions: state in, bytes out.
 */

/** What CLIENT INFO/LIST show about one client. */
export interface ClientView {
  id: number
  addr: string
  laddr: string
  ageSeconds: number
  state: SessionState
  flags: string
  multi: number
  sub: number
  psub: number
  ssub: number
}

/** One CLIENT LIST line, with Redis's field names (fields respool cannot know are 0). */
export function clientLine (v: ClientView): string {
  const s = v.state
  const idle = Math.floor((performance.now() - s.lastActive) / 1000)
  return `id=${v.id} addr=${v.addr} laddr=${v.laddr} fd=-1 name=${s.name} age=${v.ageSeconds} idle=${idle} flags=${v.flags} ` +
    `db=${s.db} sub=${v.sub} psub=${v.psub} ssub=${v.ssub} multi=${v.multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 ` +
    `rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=${s.lastCommand} user=${s.user} redir=-1 resp=${s.resp} ` +
    `lib-name=${s.libName} lib-ver=${s.libVer}\n`
}

/** Redis refuses names with spaces, newlines or other characters outside '!'..'~'. */
export function validClientName (name: Buffer): boolean {
  for (const c of name) if (c < 0x21 || c > 0x7e) return false
  return true
}

const NAME_ERROR = errorReply('ERR Client names cannot contain spaces, newlines or special characters.')

export function setName (state: SessionState, name: Buffer): Buffer {
  if (!validClientName(name)) return NAME_ERROR
  state.name = name.toString('latin1')
  return OK
}

export function getName (state: SessionState): Buffer {
  return state.name === '' ? nullReply(state.resp) : encodeValue(state.name, state.resp)
}

export function setInfo (state: SessionState, cmd: RespCommand): Buffer {
  if (cmd.argc !== 4) return wrongArity('client|setinfo')
  const attr = cmd.keyword(2)
  const value = cmd.arg(3)
  if (attr !== 'lib-name' && attr !== 'lib-ver') return errorReply(`ERR Unrecognized option '${cmd.argString(2)}'`)
  if (!validClientName(value) && value.length > 0) {
    return errorReply(`ERR ${attr} cannot contain spaces, newlines or special characters.`)
  }
  if (attr === 'lib-name') state.libName = value.toString('latin1')
  else state.libVer = value.toString('latin1')
  return OK
}

export function wrongArity (name: string): Buffer {
  return errorReply(`ERR wrong number of arguments for '${name}' command`)
}

export function clientId (id: number): Buffer {
  return integer(id)
}

export function clientInfo (view: ClientView): Buffer {
  return verbatim(clientLine(view), view.state.resp)
}

export function clientList (views: ClientView[], resp: number): Buffer {
  return verbatim(views.map(clientLine).join(''), resp)
}

/** CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id …] over respool's own clients. */
export function clientListCommand (all: ClientView[], cmd: RespCommand, resp: number): Buffer {
  let views = all
  for (let i = 2; i < cmd.argc; i++) {
    const opt = cmd.keyword(i)
    if (opt === 'type' && i + 1 < cmd.argc) {
      const type = cmd.keyword(++i)
      if (type === 'pubsub') views = views.filter((v) => v.flags === 'P')
      else if (type === 'normal') views = views.filter((v) => v.flags !== 'P')
      else if (type === 'master' || type === 'replica' || type === 'slave') views = []
      else return errorReply(`ERR Unknown client type '${cmd.argString(i)}'`)
    } else if (opt === 'id') {
      const ids = new Set<number>()
      for (i++; i < cmd.argc; i++) {
        const id = Number(cmd.argString(i))
        if (!Number.isInteger(id) || id <= 0) return errorReply('ERR Invalid client ID')
        ids.add(id)
      }
      views = views.filter((v) => ids.has(v.id))
    } else {
      return errorReply('ERR syntax error')
    }
  }
  return clientList(views, resp)
}

/** Credentials respool accepts from clients. */
export interface Credentials {
  /** The password of the default user, if any. */
  password?: string
  /** Named users and their passwords. */
  users: ReadonlyMap<string, string>
}

export const WRONGPASS = errorReply('WRONGPASS invalid username-password pair or user is disabled.')
const NO_PASSWORD = errorReply('ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?')

/** Checks AUTH [user] pass against the accepted credentials; returns the reply. */
export function authenticate (state: SessionState, creds: Credentials, user: string | null, pass: string): Buffer {
  const open = creds.password === undefined && creds.users.size === 0
  if (user === null && open) return NO_PASSWORD
  const name = user ?? 'default'
  if (open && name === 'default') {
    // Without client authentication the default user is Redis's `nopass` user: any password works.
    state.authenticated = true
    state.user = name
    return OK
  }
  const expected = name === 'default' ? creds.password : creds.users.get(name)
  if (expected === undefined || !constantTimeEqual(expected, pass)) return WRONGPASS
  state.authenticated = true
  state.user = name
  return OK
}

function constantTimeEqual (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  let diff = x.length ^ y.length
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0)
  return diff === 0
}

/**
 * HELLO [protover [AUTH user pass] [SETNAME name]], step by step as Redis runs it: the version
 * is read as Redis reads integers ("03" is refused), options are applied in order (an AUTH
 * before a bad option still authenticates), and the protocol changes only if everything
 * succeeded; answers with the server map in the new protocol.
 */
export function hello (state: SessionState, cmd: RespCommand, creds: Credentials, server: ServerInfo, clientIdValue: number): Buffer {
  let resp = state.resp
  let i = 1
  if (cmd.argc > 1) {
    const ver = parseRedisInteger(cmd.argString(1))
    if (ver === null) return errorReply('ERR Protocol version is not an integer or out of range')
    if (ver < 2 || ver > 3) return errorReply('NOPROTO unsupported protocol version')
    resp = ver as 2 | 3
    i = 2
  }
  for (; i < cmd.argc; i++) {
    const opt = cmd.keyword(i)
    const more = cmd.argc - 1 - i
    if (opt === 'auth' && more >= 2) {
      const reply = authenticate(state, creds, cmd.argString(i + 1), cmd.argString(i + 2))
      if (reply !== OK) return reply
      i += 2
    } else if (opt === 'setname' && more >= 1) {
      const reply = setName(state, cmd.arg(i + 1))
      if (reply !== OK) return reply
      i += 1
    } else {
      return errorReply(`ERR Syntax error in HELLO option '${cmd.argString(i)}'`)
    }
  }
  if (!state.authenticated) return errorReply('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time')
  state.resp = resp
  return encodeValue({
    map: [
      ['server', 'redis'],
      ['version', server.version],
      ['proto', resp],
      ['id', clientIdValue],
      ['mode', server.mode],
      ['role', server.role],
      ['modules', []]
    ]
  }, resp)
}

/**
 * The user and password an AUTH or HELLO … AUTH carries (AUTH <password> is the default user),
 * or null when it has none or is malformed (the local path answers those with Redis's errors).
 */
export function upstreamCredentials (cmd: RespCommand, isAuth: boolean): { user: string, password: string, oneArgument: boolean } | null {
  if (isAuth) {
    if (cmd.argc === 2) return { user: 'default', password: cmd.argString(1), oneArgument: true }
    if (cmd.argc === 3) return { user: cmd.argString(1), password: cmd.argString(2), oneArgument: false }
    return null
  }
  for (let i = 2; i + 2 < cmd.argc; i++) {
    if (cmd.keyword(i) === 'auth') return { user: cmd.argString(i + 1), password: cmd.argString(i + 2), oneArgument: false }
  }
  return null
}

/** HELLO without its AUTH option (Redis has checked the credentials already). */
export function withoutAuth (cmd: RespCommand): RespCommand {
  const args = cmd.args()
  for (let i = 2; i + 2 < args.length; i++) {
    if (cmd.keyword(i) === 'auth') {
      args.splice(i, 3)
      break
    }
  }
  return RespCommand.fromArgs(args)
}
