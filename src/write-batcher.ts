/**
 * Batches socket writes per event-loop tick: the first write in a tick corks the socket and
 * schedules one uncork for the end of the tick, so every reply or command produced while
 * handling one 'data' event leaves in a single writev() syscall. A timer (Envoy's 3 ms flush)
 * would add latency to every lone command; the end of the tick adds none.
 */
export interface Corked {
  /** Called once at the end of the tick in which the owner corked its socket. */
  uncork (): void
}

let queue: Corked[] = []
let scheduled = false

function flush (): void {
  const owners = queue
  queue = []
  scheduled = false
  for (let i = 0; i < owners.length; i++) owners[i].uncork()
}

/** The owner has just corked its socket; uncork it at the end of this tick. */
export function uncorkAtEndOfTick (owner: Corked): void {
  queue.push(owner)
  if (!scheduled) {
    scheduled = true
    process.nextTick(flush)
  }
}
