import { RawClient, cmd } from './raw-client.js'
import { FrameReader } from './resp-frames.js'

/** One write of a script, and how many reply frames to wait for before the next write. */
export interface Step {
  send: Buffer
  frames: number
  /** Runs before the step is written, given the port the script runs on (e.g. a PUBLISH from elsewhere). */
  before?: (port: number) => Promise<void>
}

/** A step made of commands written together (one write), waiting for `frames` replies. */
export function step (frames: number, ...commands: Array<Array<string | Buffer>>): Step {
  return { send: Buffer.concat(commands.map((args) => cmd(...args))), frames }
}

let sentinelCounter = 0

/**
 * Runs the steps on a fresh connection and returns every reply frame, in order. The stream is
 * closed with a sentinel (an ECHO of a unique token) whose reply must come next: a reply too
 * many or too few anywhere shows up as a difference, not as a prefix that happens to match.
 */
export async function runScript (port: number, steps: Step[], timeoutMs = 5000): Promise<string[]> {
  const client = await RawClient.connect(port)
  const frames = new FrameReader(client)
  try {
    const out: string[] = []
    for (const s of steps) {
      await s.before?.(port)
      if (s.send.length > 0) client.write(s.send)
      out.push(...await frames.take(s.frames, timeoutMs))
    }
    const token = `sentinel-${process.pid}-${++sentinelCounter}`
    client.write(cmd('ECHO', token))
    const sentinel = `$${token.length}\r\n${token}\r\n`
    for (let i = 0; i < 1000; i++) {
      const frame = await frames.next(timeoutMs)
      if (frame === sentinel) return out
      out.push(frame)
    }
    throw new Error('no sentinel after 1000 frames')
  } finally {
    client.close()
  }
}

/** Frames as one escaped string, for assertion messages. */
export function showFrames (frames: string[]): string {
  return JSON.stringify(frames.join(''))
}
