/**
 * AUTH and HELLO for one client: checked by respool against its own users (--auth, the
 * credentials file), or, when respool authenticates nobody itself, by Redis against its ACL
 * users. A client that authenticates as another user than the upstream URL's from then on runs
 * on connections authenticated as that user (Identities).
 */
import { CommandRefusedError, type ProxyError, toRespError } from '../errors.js'
import { OK, errorReply } from '../protocol/resp-encode.js'
import { Kind, type CommandKind } from '../commands/command-table.js'
import * as local from '../commands/local-commands.js'
import { UpstreamAuthError } from '../upstream/identity-pool.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { Router } from '../routing/router.js'
import type { SessionState } from './session-state.js'
import { R_MULTI, type Lease } from './session-effects.js'
import type { SessionContext } from './session-context.js'

/** What AUTH and HELLO use of a session (ClientSession). */
export interface AuthHost {
  readonly id: number
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'authRequired' | 'cluster' | 'credentials' | 'identities' | 'serverInfo' | 'serverInfoKnown'>
  readonly router: Router
  readonly closed: boolean
  readonly inflight: number
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  fill (slot: ReplySlot, reply: Buffer): void
  pump (): void
  waitForInflight (): false
  awaitLane (): false
  awaitVerdict (): void
  verdictIn (): void
  /** The client's authentication changed: the framer's limits for unauthenticated clients follow. */
  authChanged (): void
  /** Leaves the shared pub/sub fan-out (subscriptions made as the user the client was). */
  forgetSharedMember (): void
  dropIdentity (): void
  adoptIdentity (router: Router): void
}

/** AUTH or HELLO (with or without AUTH). Returns false if it must wait. */
export function authOrHello (s: AuthHost, slot: ReplySlot, cmd: RespCommand, kind: CommandKind, lease: Lease | null): boolean {
  const inMulti = lease !== null && (lease.reasons & R_MULTI) !== 0
  const ctx = s.context
  if (kind === Kind.HELLO && !ctx.serverInfoKnown() && s.router.pickLane(s.state.db, s.state.resp) === null) {
    // HELLO reports the server's version: wait for the first connection to learn it.
    return s.awaitLane()
  }
  if (inMulti) return s.answerLocally(slot, toRespError(new CommandRefusedError(`${cmd.name.toUpperCase()} inside MULTI is not supported`)))
  // (In cluster mode every client runs as the upstream URL's user: respool answers AUTH.)
  if (!ctx.authRequired && ctx.cluster == null) {
    const credentials = local.upstreamCredentials(cmd, kind === Kind.AUTH)
    if (credentials !== null && !isUrlUser(s, credentials)) return authUpstream(s, slot, cmd, kind, credentials, lease)
  }
  s.answerLocally(slot, kind === Kind.AUTH ? authLocally(s, cmd) : local.hello(s.state, cmd, ctx.credentials, ctx.serverInfo(), s.id))
  // Redis's stricter size limits apply only until the client has authenticated.
  s.authChanged()
  return true
}

/** The upstream URL's own user and password: its clients need no identity of their own. */
function isUrlUser (s: AuthHost, c: { user: string, password: string }): boolean {
  const up = s.context.config.upstream
  return c.user === (up.username ?? 'default') && c.password === (up.password ?? '') && up.password !== undefined
}

/**
 * AUTH (or HELLO … AUTH) as a Redis ACL user, checked by Redis: on +OK this client's commands
 * run from now on as that user, on connections authenticated as that user (Identities); on an
 * error, the client gets Redis's own line and stays who it was.
 */
function authUpstream (s: AuthHost, slot: ReplySlot, cmd: RespCommand, kind: CommandKind, c: { user: string, password: string, oneArgument: boolean }, lease: Lease | null): boolean {
  const ctx = s.context
  if (s.inflight > 0) {
    return s.waitForInflight() // earlier commands run as the user they were sent as (and a pin may go)
  }
  if (lease !== null) {
    // In a transaction, subscribed or in MONITOR on a pin: the user cannot change under it;
    // the default user's rules apply, as respool answers them (documented).
    s.answerLocally(slot, kind === Kind.AUTH ? authLocally(s, cmd) : local.hello(s.state, cmd, ctx.credentials, ctx.serverInfo(), s.id))
    s.authChanged()
    return true
  }
  s.awaitVerdict()
  ctx.identities.attach(c.oneArgument ? null : c.user, c.password).then((router) => {
    if (s.closed) {
      ctx.identities.detach(router)
      return
    }
    s.forgetSharedMember() // RESP3 subscriptions made as the old user
    s.dropIdentity()
    if (c.user === (ctx.config.upstream.username ?? 'default')) {
      ctx.identities.detach(router) // Redis said yes, and respool's connections are that user already
    } else {
      s.adoptIdentity(router)
    }
    const state = s.state
    state.authenticated = true
    state.user = c.user
    s.fill(slot, kind === Kind.AUTH ? OK : local.hello(state, local.withoutAuth(cmd), ctx.credentials, ctx.serverInfo(), s.id))
    s.authChanged()
    s.verdictIn()
    s.pump()
  }, (err: ProxyError) => {
    if (s.closed) return
    s.fill(slot, err instanceof UpstreamAuthError ? err.reply : toRespError(err))
    s.verdictIn()
    s.pump()
  })
  return true
}

/** AUTH [user] password against respool's own users. */
function authLocally (s: AuthHost, cmd: RespCommand): Buffer {
  const credentials = s.context.credentials
  if (cmd.argc > 3) return errorReply('ERR syntax error')
  if (cmd.argc === 2) return local.authenticate(s.state, credentials, null, cmd.argString(1))
  if (cmd.argc === 3) return local.authenticate(s.state, credentials, cmd.argString(1), cmd.argString(2))
  return local.wrongArity('auth')
}
