import { ConfigError } from '../errors.js'

/**
 * Per-client output buffer limits, as Redis's `client-output-buffer-limit`: for each class of
 * client (normal, pubsub), a hard limit that disconnects at once and a soft limit that
 * disconnects a client that stays above it for longer than a number of seconds. 0 = no limit.
 */
export interface OutputLimit {
  hard: number
  soft: number
  softSeconds: number
}

export interface OutputLimits {
  normal: OutputLimit
  pubsub: OutputLimit
}

/** Defaults that protect a sidecar; pubsub as Redis's own default (32mb 8mb 60). */
export const DEFAULT_OUTPUT_LIMITS: OutputLimits = {
  normal: { hard: 512 * 1024 * 1024, soft: 128 * 1024 * 1024, softSeconds: 60 },
  pubsub: { hard: 32 * 1024 * 1024, soft: 8 * 1024 * 1024, softSeconds: 60 }
}

/**
 * Parses Redis's syntax: `normal 512mb 128mb 60 pubsub 32mb 8mb 60` (classes may be given alone;
 * the others keep their defaults). Units as Redis's: k/kb, m/mb, g/gb (k = 1000, kb = 1024).
 */
export function parseOutputLimits (text: string, base: OutputLimits = DEFAULT_OUTPUT_LIMITS): OutputLimits {
  const words = text.trim().split(/\s+/).filter((w) => w !== '')
  if (words.length % 4 !== 0) throw new ConfigError(`client-output-buffer-limit: expected <class> <hard> <soft> <seconds> groups, got "${text}"`)
  const limits: OutputLimits = { normal: { ...base.normal }, pubsub: { ...base.pubsub } }
  for (let i = 0; i < words.length; i += 4) {
    const cls = words[i].toLowerCase()
    if (cls !== 'normal' && cls !== 'pubsub') throw new ConfigError(`client-output-buffer-limit: class must be normal or pubsub, got "${words[i]}"`)
    const seconds = Number(words[i + 3])
    if (!Number.isInteger(seconds) || seconds < 0) throw new ConfigError(`client-output-buffer-limit: seconds must be a whole number, got "${words[i + 3]}"`)
    limits[cls] = { hard: parseMemory(words[i + 1]), soft: parseMemory(words[i + 2]), softSeconds: seconds }
  }
  return limits
}

/** A memory size as Redis writes it: 1024, 1k, 1kb, 5mb, 1gb (k = 1000, kb = 1024). */
export function parseMemory (text: string): number {
  const m = /^(\d+)(k|kb|m|mb|g|gb|b)?$/i.exec(text.trim())
  if (m === null) throw new ConfigError(`not a memory size: "${text}" (examples: 1048576, 64mb, 1gb)`)
  const unit = (m[2] ?? 'b').toLowerCase()
  const factor = { b: 1, k: 1000, kb: 1024, m: 1000 ** 2, mb: 1024 ** 2, g: 1000 ** 3, gb: 1024 ** 3 }[unit] as number
  return Number(m[1]) * factor
}

export function formatOutputLimits (limits: OutputLimits): string {
  return (['normal', 'pubsub'] as const).map((c) => `${c} ${limits[c].hard} ${limits[c].soft} ${limits[c].softSeconds}`).join(' ')
}
