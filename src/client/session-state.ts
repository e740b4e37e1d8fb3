/**
 * Per-client connection state that Redis keeps per connection and respool keeps per client,
 * so that no shared upstream connection carries one client's state into another's commands.
 */
export class SessionState {
  /** Selected database; applied to whichever upstream connection runs the client's command. */
  db: number
  /** Protocol the client speaks (HELLO); upstream connections are switched to match. */
  resp: 2 | 3 = 2
  name = ''
  libName = ''
  libVer = ''
  /** CLIENT REPLY OFF: replies are not sent; SKIP: the next one is not. */
  replyOff = false
  skipNext = false
  /** AUTH/HELLO AUTH succeeded (or no password is required). */
  authenticated: boolean
  user = 'default'
  /** Name of the last command, for CLIENT INFO/LIST. */
  lastCommand = 'NULL'
  /** When the last command arrived (performance.now(): cheaper than Date.now() on every command). */
  lastActive = performance.now()

  constructor (readonly defaultDb: number, readonly authRequired: boolean) {
    this.db = defaultDb
    this.authenticated = !authRequired
  }

  /** RESET: back to how a new connection starts. */
  reset (): void {
    this.db = this.defaultDb
    this.resp = 2
    this.name = ''
    this.replyOff = false
    this.skipNext = false
    this.authenticated = !this.authRequired
    this.user = 'default'
  }
}
