import net from 'node:net'
import tls from 'node:tls'

/**
 * Reads sockets into one reused buffer instead of a fresh one per read.
 *
 * By default Node.js gives every read its own buffer (a 64 KB allocation, shrunk to what was
 * read) and passes it through the stream machinery ('data' event, read-ahead, a tick callback):
 * for a proxy whose clients send one small command per read, that is most of what a command
 * costs besides the system calls, and the buffers are memory V8 counts towards its next garbage
 * collection. Node's `onread` option reads into a buffer the program supplies and calls back
 * directly. Bytes read this way are valid only during the callback: whoever keeps some must copy
 * them (the framers do, see their `transient` mode). Callbacks run one at a time, so every socket
 * read this way shares the same buffer.
 *
 * `onread` is public for sockets a program connects (net.connect). For sockets a server accepts
 * there is no public way; `adoptReadBuffer` switches an accepted socket to the same mode through
 * the internals `onread` itself uses (the socket's kBuffer/kBufferCb fields and its handle's
 * useUserBuffer), found at startup on a socket made with `onread`. When they are not found (a
 * Node.js version that changed them), or the socket is TLS, the socket stays on 'data' events.
 */

/** Called with the bytes of one read; the buffer is reused once the call returns. */
export type OnRead = (chunk: Buffer) => void

/** The size of the shared read buffer: the most one read returns. */
export const READ_BUFFER_BYTES = 64 * 1024
const shared = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)

/** Bytes `start`..`end` of a transient chunk in memory of their own (small ones from Node's shared pool). */
export function copyOf (chunk: Buffer, start: number, end: number): Buffer {
  const out = Buffer.allocUnsafe(end - start)
  chunk.copy(out, 0, start, end)
  return out
}

/** The `onread` option for net.connect: reads go to the shared buffer, then to `onRead`. */
export function readOption (onRead: OnRead): net.OnReadOpts {
  return {
    buffer: shared,
    callback: (bytes: number, buf: Uint8Array): boolean => {
      onRead((buf as Buffer).subarray(0, bytes))
      return true
    }
  }
}

interface ReadInternals { kBuffer: symbol, kBufferCb: symbol, kBufferGen: symbol }

/** The socket fields behind `onread`, found on a socket made with it (never connected). */
const internals: ReadInternals | null = (() => {
  try {
    // (@types/node 20 lists `onread` for net.connect only; the constructor takes it too.)
    const probe = new net.Socket({ onread: { buffer: Buffer.alloc(1), callback: () => true } } as net.SocketConstructorOpts)
    const find = (name: string): symbol | undefined => Object.getOwnPropertySymbols(probe).find((s) => s.description === name)
    const kBuffer = find('kBuffer')
    const kBufferCb = find('kBufferCb')
    const kBufferGen = find('kBufferGen')
    const fields = probe as unknown as Record<symbol, unknown>
    if (kBuffer === undefined || kBufferCb === undefined || kBufferGen === undefined) return null
    if (!(fields[kBuffer] instanceof Uint8Array) || typeof fields[kBufferCb] !== 'function' || fields[kBufferGen] !== null) return null
    probe.destroy()
    return { kBuffer, kBufferCb, kBufferGen }
  } catch {
    return null
  }
})()

/** Accepted sockets can be read into the shared buffer on this Node.js. */
export const canAdoptReadBuffer = internals !== null

interface UserBufferHandle { useUserBuffer?: (buf: Uint8Array) => void, reading?: boolean }

/** Called with the socket and the bytes of one read; the buffer is reused once the call returns. */
export type OnSocketRead = (socket: net.Socket, chunk: Buffer) => void

/** The read callback for each handler, made once: an accepted socket costs no closure of its own. */
const callbacks = new Map<OnSocketRead, (this: net.Socket, bytes: number, buf: Uint8Array) => boolean>()

/**
 * Switches an accepted socket to reading into the shared buffer; `onRead` then gets every read
 * and 'data' is never emitted. Returns false (nothing changed) when that is not possible. Must
 * run in the turn the socket was accepted, before its first read.
 */
export function adoptReadBuffer (socket: net.Socket, onRead: OnSocketRead): boolean {
  if (internals === null || socket instanceof tls.TLSSocket) return false
  const handle = (socket as unknown as { _handle?: UserBufferHandle | null })._handle
  const fields = socket as unknown as Record<symbol, unknown>
  if (handle == null || typeof handle.useUserBuffer !== 'function' || fields[internals.kBuffer] !== null) return false
  let callback = callbacks.get(onRead)
  if (callback === undefined) {
    // Node calls it as a method of the socket (socket[kBufferCb](bytes, buf)).
    callback = function (this: net.Socket, bytes: number, buf: Uint8Array): boolean {
      onRead(this, (buf as Buffer).subarray(0, bytes))
      return true
    }
    callbacks.set(onRead, callback)
  }
  fields[internals.kBuffer] = shared
  fields[internals.kBufferCb] = callback
  handle.useUserBuffer(shared)
  return true
}
