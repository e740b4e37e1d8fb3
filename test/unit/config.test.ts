import { test } from 'node:test'
import assert from 'node:assert/strict'
import { validateConfig, parseUpstreamUrl, redactUrl, describeUpstream } from '../../src/config.js'
import { ConfigError } from '../../src/errors.js'

test('defaults', () => {
  const c = validateConfig({})
  assert.equal(c.host, '127.0.0.1')
  assert.equal(c.port, 6380)
  assert.equal(c.poolSize, 8)
  assert.equal(c.maxPins, 7)
  assert.deepEqual(c.upstream, { host: '127.0.0.1', port: 6379, tls: false, username: undefined, password: undefined, db: 0 })
})

test('max pins follows the pool size and leaves one connection for shared traffic; a pool of one is refused', () => {
  assert.throws(() => validateConfig({ poolSize: 1 }), /pool-size: must be at least 2/)
  assert.equal(validateConfig({ poolSize: 2 }).maxPins, 1)
  assert.equal(validateConfig({ poolSize: 16 }).maxPins, 15)
  assert.equal(validateConfig({ poolSize: 16, maxPins: 4 }).maxPins, 4)
  assert.throws(() => validateConfig({ poolSize: 4, maxPins: 4 }), /max-pins: must be an integer from 1 to 3/)
})

test('upstream URLs', () => {
  assert.deepEqual(parseUpstreamUrl('redis://u:p%40ss@example.test:7000/12'), { host: 'example.test', port: 7000, tls: false, username: 'u', password: 'p@ss', db: 12 })
  assert.deepEqual(parseUpstreamUrl('redis://:pw@127.0.0.1'), { host: '127.0.0.1', port: 6379, tls: false, username: undefined, password: 'pw', db: 0 })
  assert.deepEqual(parseUpstreamUrl('redis://pw@127.0.0.1'), { host: '127.0.0.1', port: 6379, tls: false, password: 'pw', db: 0 })
  assert.equal(parseUpstreamUrl('rediss://h:1').tls, true)
  assert.equal(parseUpstreamUrl('redis://[::1]:6379').host, '::1')
  assert.deepEqual(parseUpstreamUrl('unix:///tmp/r.sock?db=2'), { host: 'localhost', port: 0, path: '/tmp/r.sock', tls: false, username: undefined, password: undefined, db: 2 })
  for (const bad of ['http://x', 'not a url', 'redis://h/-1', 'redis://h/x']) {
    assert.throws(() => parseUpstreamUrl(bad), ConfigError, bad)
  }
})

test('credentials never appear in descriptions or redacted URLs', () => {
  assert.equal(redactUrl('redis://user:secret@h:1/0'), 'redis://user:***@h:1/0')
  assert.equal(redactUrl('redis://secret@h:1/0'), 'redis://***@h:1/0')
  assert.doesNotMatch(describeUpstream(parseUpstreamUrl('redis://user:secret@h:1/3')), /secret|user/)
})

test('bad values name the option', () => {
  assert.throws(() => validateConfig({ poolSize: 0 }), /pool-size: must be an integer from 2/)
  assert.throws(() => validateConfig({ port: 70000 }), /port: must be an integer from 0 to 65535/)
  assert.throws(() => validateConfig({ acquireTimeoutMs: 1.5 }), /acquire-timeout-ms/)
  assert.throws(() => validateConfig({ logLevel: 'loud' }), /log-level/)
})

test('sentinels: host:port entries (repeated or comma-separated, 26379 by default, IPv6 in brackets); a master name is required with them', () => {
  const c = validateConfig({ sentinels: ['10.0.0.1:26380,10.0.0.2', '[::1]:26381'], sentinelMaster: 'mymaster', upstream: 'redis://:data@ignored:1/2' })
  assert.deepEqual(c.sentinels, [{ host: '10.0.0.1', port: 26380 }, { host: '10.0.0.2', port: 26379 }, { host: '::1', port: 26381 }])
  assert.equal(c.upstream.password, 'data')
  assert.equal(c.upstream.db, 2)
  assert.equal(c.sentinelTls, false)
  assert.throws(() => validateConfig({ sentinels: ['10.0.0.1:26379'] }), /sentinel-master: the master's name is required/)
  assert.throws(() => validateConfig({ sentinelMaster: 'mymaster' }), /sentinel: --sentinel-master needs at least one --sentinel/)
  assert.throws(() => validateConfig({ sentinels: ['10.0.0.1:0'], sentinelMaster: 'm' }), /sentinel: expected host:port, got '10\.0\.0\.1:0'/)
  assert.throws(() => validateConfig({ sentinels: ['h:1'], sentinelMaster: 'm', upstream: 'unix:///tmp/r.sock' }), /unix:\/\/ upstream cannot be used with --sentinel/)
})

test('a redis+sentinel:// URL names the sentinels, the master and the database; its credentials are the data credentials', () => {
  const c = validateConfig({ upstream: 'redis+sentinel://app:s%40cret@10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/3?sentinel_username=watch&sentinel_password=eyes' })
  assert.deepEqual(c.sentinels, [{ host: '10.0.0.1', port: 26380 }, { host: '10.0.0.2', port: 26379 }, { host: '::1', port: 26381 }])
  assert.equal(c.sentinelMaster, 'mymaster')
  assert.equal(c.upstream.username, 'app')
  assert.equal(c.upstream.password, 's@cret')
  assert.equal(c.upstream.db, 3)
  assert.equal(c.upstream.tls, false)
  assert.equal(c.sentinelUsername, 'watch')
  assert.equal(c.sentinelPassword, 'eyes')
  assert.equal(c.sentinelTls, false)
  // A password alone, database 0, TLS to both the master and the sentinels.
  const t = validateConfig({ upstream: 'rediss+sentinel://:pw@s1/m' })
  assert.deepEqual(t.sentinels, [{ host: 's1', port: 26379 }])
  assert.equal(t.upstream.password, 'pw')
  assert.equal(t.upstream.username, undefined)
  assert.equal(t.upstream.db, 0)
  assert.equal(t.upstream.tls, true)
  assert.equal(t.sentinelTls, true)
  // Flags for the sentinels' credentials win over the URL's.
  assert.equal(validateConfig({ upstream: 'redis+sentinel://s1/m?sentinel_password=url', sentinelPassword: 'flag' }).sentinelPassword, 'flag')
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://s1:26379' }), /the master's name is missing/)
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://s1/m/x' }), /database must be a non-negative integer/)
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://s1/m?timeout=5' }), /unknown option 'timeout'/)
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://s1/m', sentinels: ['s2'] }), /--sentinel cannot be given too/)
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://s1/m', sentinelMaster: 'other' }), /differs from the master named/)
  assert.throws(() => validateConfig({ upstream: 'redis+sentinel://:secret@s1:0/m' }), (err: Error) => err instanceof ConfigError && !err.message.includes('secret'))
})
