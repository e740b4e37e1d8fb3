import { parentPort, Worker } from 'node:worker_threads'
import { LoadGenerator, type LoadSpec, type LoadWindow } from './load.js'

/**
 * The load generator runs in a worker thread, so the respool under test (in the main thread)
 * does not share an event loop with the clients measuring it. The main thread sends one request
 * at a time and gets one answer per request.
 */
type Request = { type: 'start', spec: LoadSpec } | { type: 'mark' } | { type: 'collect' } | { type: 'stop' }
type Answer = { type: 'ok' } | { type: 'window', window: LoadWindow } | { type: 'error', message: string }

if (parentPort !== null) {
  const port = parentPort
  let generator: LoadGenerator | null = null
  port.on('message', (request: Request) => {
    const answer = async (): Promise<Answer> => {
      switch (request.type) {
        case 'start':
          generator = new LoadGenerator(request.spec)
          await generator.start()
          return { type: 'ok' }
        case 'mark':
          generator?.mark()
          return { type: 'ok' }
        case 'collect':
          if (generator === null) throw new Error('not started')
          return { type: 'window', window: generator.collect() }
        case 'stop':
          await generator?.stop()
          generator = null
          return { type: 'ok' }
      }
    }
    answer().then((a) => { port.postMessage(a) }, (err: Error) => { port.postMessage({ type: 'error', message: err.message }) })
  })
}

/** The main thread's handle on a load generator in a worker thread. */
export class LoadWorker {
  readonly #worker: Worker
  readonly #waiting: Array<{ resolve: (a: Answer) => void, reject: (e: Error) => void }> = []
  #dead: Error | null = null

  constructor () {
    this.#worker = new Worker(new URL('./load-worker.js', import.meta.url))
    this.#worker.on('message', (answer: Answer) => { this.#waiting.shift()?.resolve(answer) })
    const fail = (err: Error): void => {
      this.#dead ??= err
      for (const w of this.#waiting.splice(0)) w.reject(err)
    }
    this.#worker.on('error', fail)
    this.#worker.on('exit', () => { fail(new Error('load generator stopped')) })
  }

  async start (spec: LoadSpec): Promise<void> {
    await this.#ask({ type: 'start', spec })
  }

  async mark (): Promise<void> {
    await this.#ask({ type: 'mark' })
  }

  async collect (): Promise<LoadWindow> {
    const answer = await this.#ask({ type: 'collect' })
    if (answer.type !== 'window') throw new Error('unexpected answer from the load generator')
    return answer.window
  }

  async stop (): Promise<void> {
    await this.#ask({ type: 'stop' })
  }

  /** Ends the worker now: its connections close with it. */
  async terminate (): Promise<void> {
    await this.#worker.terminate()
  }

  async #ask (request: Request): Promise<Answer> {
    if (this.#dead !== null) throw this.#dead
    const answer = await new Promise<Answer>((resolve, reject) => {
      this.#waiting.push({ resolve, reject })
      this.#worker.postMessage(request)
    })
    if (answer.type === 'error') throw new Error(answer.message)
    return answer
  }
}
