import { setTimeout as delay } from 'node:timers/promises'

/** Polls `condition` until it holds, failing with `what` after `timeoutMs`. */
export async function waitFor (condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await delay(10)
  }
}

/** Polls until `read()` returns `want`; the failure says what it was last. */
export async function waitForValue<T> (what: string, read: () => T | Promise<T>, want: T, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = await read()
  while (last !== want) {
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms, want ${JSON.stringify(want)}`)
    await delay(10)
    last = await read()
  }
}
