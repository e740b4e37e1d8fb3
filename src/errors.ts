/**
 * Errors respool raises itself. Each has a stable `code` users and tests can match on.
 *
 * A Redis error reply (`-ERR …`, `-WRONGTYPE …`) is not one of these: it is reply data and
 * travels to the client byte for byte. These classes describe failures of the proxy's own
 * machinery; `toRespError()` is the single place that turns them into bytes on the wire.
 */
export class ProxyError extends Error {
  readonly code: string = 'RESPOOL_ERR'
  /** The Redis error prefix the client sees (`ERR`, `NOAUTH`, …). */
  readonly prefix: string = 'ERR'

  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = new.target.name
  }
}

/** Malformed RESP from a client (message text matches Redis's own) or from an upstream. */
export class ProtocolError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_PROTOCOL'
}

/** The upstream connection carrying the command closed or failed before the reply arrived. */
export class UpstreamClosedError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_UPSTREAM_CLOSED'
}

/** The upstream did not answer within the command timeout; the connection was dropped. */
export class UpstreamTimeoutError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_UPSTREAM_TIMEOUT'
}

/** A connection to the upstream could not be established (refused, timed out, AUTH failed). */
export class UpstreamConnectError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_UPSTREAM_CONNECT'
}

/** The node reached is a replica (ROLE), not the master respool must write to. */
export class UpstreamReplicaError extends UpstreamConnectError {}

/** Sentinel mode: the sentinels name no master, or none can be reached or verified. */
export class NoMasterError extends UpstreamConnectError {}

/** No upstream connection became free before the deadline. */
export class PoolTimeoutError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_POOL_TIMEOUT'
}

/** A command the proxy refuses (policy, or a command that would corrupt a shared connection). */
export class CommandRefusedError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_COMMAND_REFUSED'
}

/** The proxy is shutting down and no longer serves this client. */
export class ShuttingDownError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_SHUTTING_DOWN'
}

/** Invalid configuration (CLI flags, environment, options object). */
export class ConfigError extends ProxyError {
  override readonly code = 'RESPOOL_ERR_CONFIG'
}

/**
 * The only wire mapping for proxy-made errors. Protocol errors keep Redis's exact wording
 * (`-ERR Protocol error: …`); everything else is prefixed with `respool:` so an operator can
 * tell a proxy failure from a Redis one.
 */
export function toRespError (err: Error): Buffer {
  const prefix = err instanceof ProxyError ? err.prefix : 'ERR'
  const text = err instanceof ProtocolError ? err.message : `respool: ${err.message}`
  // A protocol error may quote a byte the client sent, which Redis echoes as that one byte.
  return Buffer.from(`-${prefix} ${oneLine(text)}\r\n`, err instanceof ProtocolError ? 'latin1' : 'utf8')
}

/** Error replies are single lines; CR/LF inside would break framing for the client. */
function oneLine (text: string): string {
  return text.replace(/[\r\n]+/g, ' ')
}
