import { setTimeout as delay } from 'node:timers/promises'

/** Polls `condition` until it holds, failing with `what` after `timeoutMs`. */
export async function waitFor (condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await delay(10)
  }
}
