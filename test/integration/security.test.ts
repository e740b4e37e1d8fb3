import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import tls from 'node:tls'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { startRedis, freePort, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'

let redis: RedisServer
let dir: string

before(async () => {
  redis = await startRedis()
  dir = mkdtempSync(join(tmpdir(), 'respool-sec-'))
})
after(async () => {
  await redis?.stop()
  rmSync(dir, { recursive: true, force: true })
})

test('with --password nothing is forwarded before AUTH, and Redis\'s unauthenticated limits apply', { timeout: 15000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, password: 'proxy-pass', users: ['alice:wonder'] })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('GET', 'k'), cmd('AUTH', 'nope'), cmd('AUTH', 'proxy-pass'), cmd('SET', 'authed', '1')]))
  const expected = '-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+OK\r\n'
  assert.equal(await c.readExactly(expected), expected)
  const alice = await RawClient.connect(proxy.address.port)
  after(() => { alice.close() })
  alice.write(Buffer.concat([cmd('HELLO', '2', 'AUTH', 'alice', 'wrong'), cmd('HELLO', '2', 'AUTH', 'alice', 'wonder', 'SETNAME', 'al'), cmd('CLIENT', 'GETNAME')]))
  const aliceFrames = new FrameReader(alice)
  const [refused, hello, name] = await aliceFrames.take(3)
  assert.match(refused, /^-WRONGPASS [^\r]*\r\n$/)
  assert.match(hello, /^\*14\r\n\$6\r\nserver\r\n/)
  assert.equal(name, '$2\r\nal\r\n')
  assert.deepEqual(await aliceFrames.framesBeforeSentinel(), [])
  // Before AUTH, Redis allows at most 10 arguments and 16 KB arguments.
  const stranger = await RawClient.connect(proxy.address.port)
  stranger.write('*11\r\n')
  assert.equal(await stranger.readUntilClose(), '-ERR Protocol error: unauthenticated multibulk length\r\n')
  const big = await RawClient.connect(proxy.address.port)
  big.write('*2\r\n$3\r\nGET\r\n$20000\r\n')
  assert.equal(await big.readUntilClose(), '-ERR Protocol error: unauthenticated bulk length\r\n')
  // After AUTH the normal limits apply.
  c.write(cmd('SET', 'big', 'x'.repeat(20000)))
  assert.equal(await c.readExactly('+OK\r\n'), '+OK\r\n')
})

test('upstream credentials from the environment-style option or a file never show in errors or CLIENT replies', { timeout: 15000 }, async () => {
  const secured = await startRedis(['--requirepass', 'upstream-secret'])
  after(async () => { await secured.stop() })
  const file = join(dir, 'upw')
  writeFileSync(file, 'upstream-secret\n')
  const fromFile = await startProxy({ upstream: `redis://127.0.0.1:${secured.port}`, upstreamPasswordFile: file })
  after(async () => { await fromFile.destroy() })
  const c = await RawClient.connect(fromFile.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('PING'), cmd('CLIENT', 'INFO'), cmd('CLIENT', 'LIST')]))
  const replies = await new FrameReader(c).take(3)
  assert.equal(replies[0], '+PONG\r\n')
  assert.doesNotMatch(replies.join(''), /upstream-secret/)
  // A wrong password: the error explains the failure without repeating any password.
  const wrong = await startProxy({ upstream: `redis://:not-the-secret@127.0.0.1:${secured.port}`, acquireTimeoutMs: 300 })
  after(async () => { await wrong.destroy() })
  const w = await RawClient.connect(wrong.address.port)
  after(() => { w.close() })
  w.write(cmd('PING'))
  const failure = await new FrameReader(w).next(5000)
  assert.match(failure, /^-ERR respool: upstream redis:\/\/127\.0\.0\.1:\d+\/0 unavailable \(AUTH failed: WRONGPASS[^\r\n]*\r\n$/)
  assert.doesNotMatch(failure, /not-the-secret/)
})

test('a deny list of its own refuses what it names and forwards the rest, DEBUG included', { timeout: 10000 }, async () => {
  const custom = await startProxy({ upstream: redis.url, denyCommands: ['flushall', 'keys'] })
  after(async () => { await custom.destroy() })
  const c = await RawClient.connect(custom.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('FLUSHALL'), cmd('KEYS', '*'), cmd('DEBUG', 'SLEEP', '0'), cmd('PSYNC', '?', '-1')]))
  const frames = new FrameReader(c)
  const lines = await frames.take(4)
  assert.match(lines[0], /^-ERR respool: 'FLUSHALL' is refused by policy/)
  assert.match(lines[1], /^-ERR respool: 'KEYS' is refused by policy/)
  assert.match(lines[2], /^-ERR DEBUG command not allowed/) // forwarded: Redis answers for itself
  assert.match(lines[3], /^-ERR respool: 'PSYNC' is refused: replication commands cannot be proxied/)
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
})

test('the default deny list refuses DEBUG and SHUTDOWN: respool answers, Redis never sees them', { timeout: 15000 }, async () => {
  // A Redis that runs DEBUG when asked directly.
  const permissive = await startRedis(['--enable-debug-command', 'yes'])
  after(async () => { await permissive.stop() })
  assert.equal(await commandOn(permissive.port, 'DEBUG', 'SLEEP', '0'), '+OK\r\n')
  assert.equal(await commandOn(permissive.port, 'CONFIG', 'RESETSTAT'), '+OK\r\n')
  const proxy = await startProxy({ upstream: permissive.url }) // the default --deny-commands
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const frames = new FrameReader(c)
  c.write(Buffer.concat([cmd('DEBUG', 'SLEEP', '0'), cmd('debug', 'set-active-expire', '1'), cmd('SHUTDOWN', 'NOSAVE'), cmd('PING')]))
  const [sleep, expire, shutdown, pong] = await frames.take(4)
  assert.match(sleep, /^-ERR respool: 'DEBUG' is refused by policy[^\r\n]*\r\n$/)
  assert.match(expire, /^-ERR respool: 'DEBUG' is refused by policy[^\r\n]*\r\n$/)
  assert.match(shutdown, /^-ERR respool: 'SHUTDOWN' is refused by policy[^\r\n]*\r\n$/)
  assert.equal(pong, '+PONG\r\n')
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
  // Redis neither ran nor rejected them: it never got them, and it is still up.
  assert.doesNotMatch(await commandOn(permissive.port, 'INFO', 'commandstats'), /cmdstat_(debug|shutdown)/)
  assert.equal(await commandOn(permissive.port, 'PING'), '+PONG\r\n')
})

function makeCerts (): { ca: string, cert: string, key: string } {
  const ca = join(dir, 'ca.pem')
  const caKey = join(dir, 'ca.key')
  const key = join(dir, 'server.key')
  const csr = join(dir, 'server.csr')
  const cert = join(dir, 'server.pem')
  const ext = join(dir, 'ext.cnf')
  writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  const ssl = (...args: string[]): void => { execFileSync('openssl', args, { stdio: 'ignore' }) }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', ca, '-days', '1', '-subj', '/CN=respool-test-ca')
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost')
  ssl('x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', ext)
  return { ca, cert, key }
}

test('TLS: a rediss:// upstream is verified against the CA (and refused without it); respool can serve TLS itself', { timeout: 30000 }, async () => {
  const { ca, cert, key } = makeCerts()
  const tlsPort = await freePort()
  const secure = await startRedis(['--tls-port', String(tlsPort), '--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', ca, '--tls-auth-clients', 'no'])
  after(async () => { await secure.stop() })
  const verified = await startProxy({ upstream: `rediss://localhost:${tlsPort}`, upstreamTlsCa: ca, tlsCert: cert, tlsKey: key })
  after(async () => { await verified.destroy() })
  const client = new Redis({ port: verified.address.port, host: '127.0.0.1', tls: { ca: [execFileSync('cat', [ca])], servername: 'localhost' }, maxRetriesPerRequest: 0 })
  after(() => { client.disconnect() })
  assert.equal(await client.set('over-tls', 'yes'), 'OK')
  assert.equal(await client.get('over-tls'), 'yes')
  // Verification is on by default: without the CA the upstream is refused, with a clear reason.
  const unverified = await startProxy({ upstream: `rediss://localhost:${tlsPort}`, acquireTimeoutMs: 500 })
  after(async () => { await unverified.destroy() })
  const c = await RawClient.connect(unverified.address.port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  assert.match(await new FrameReader(c).next(5000), /^-ERR respool: upstream rediss:\/\/localhost:\d+\/0 unavailable \(.*(self.signed|unable to verify|certificate)/i)
  // A plain TCP client cannot talk to the TLS listener: it is disconnected, never answered.
  const plain = await RawClient.connect(verified.address.port)
  plain.write(cmd('PING'))
  assert.doesNotMatch(await plain.readUntilClose(5000), /PONG/)
  plain.close()
  const raw = tls.connect({ port: verified.address.port, host: '127.0.0.1', ca: execFileSync('cat', [ca]), servername: 'localhost' })
  await new Promise((resolve) => raw.once('secureConnect', resolve))
  raw.write(cmd('PING'))
  const [reply] = await new Promise<Buffer[]>((resolve) => raw.once('data', (d: Buffer) => { resolve([d]) }))
  assert.equal(reply.toString(), '+PONG\r\n')
  raw.destroy()
})

test('unix sockets: respool listens on one and forwards to one', { timeout: 15000 }, async () => {
  const upstreamSock = join(dir, 'redis.sock')
  const viaSocket = await startRedis(['--unixsocket', upstreamSock, '--unixsocketperm', '700'])
  after(async () => { await viaSocket.stop() })
  const listenSock = join(dir, 'respool.sock')
  const proxy = await startProxy({ upstream: `unix://${upstreamSock}?db=2`, unixSocket: listenSock })
  after(async () => { await proxy.destroy() })
  const client = new Redis({ path: listenSock, maxRetriesPerRequest: 0 })
  after(() => { client.disconnect() })
  assert.equal(await client.set('sock', 'ok'), 'OK')
  const direct = new Redis({ port: viaSocket.port, db: 2, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  assert.equal(await direct.get('sock'), 'ok')
})
