import { pino, type Logger } from 'pino'

export type { Logger }

/**
 * Structured JSON logs (pino). Anything that might carry credentials is redacted at the
 * logger, so a careless field cannot leak them.
 */
export function createLogger (level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({
    name: 'respool',
    level,
    base: { pid: process.pid },
    redact: {
      paths: ['password', '*.password', 'upstream.password', 'config.upstream.password', 'username', '*.username'],
      censor: '***'
    }
  }, destination ?? pino.destination({ fd: 1, sync: false }))
}

/** A logger that drops everything (library use without logging, tests). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
