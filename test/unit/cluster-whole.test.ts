import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decodeScanCursor, encodeScanCursor, scanReply } from '../../src/cluster/scan-cursor.js'
import { infoHasKeyspace, mergeKeyspaceSections, withKeyspace } from '../../src/cluster/info-reply.js'

test('SCAN cursor: master index in bits 53-62, node cursor below; read as Redis reads a cursor', () => {
  assert.deepEqual(decodeScanCursor('0'), { master: 0, node: 0n })
  assert.deepEqual(decodeScanCursor('1234'), { master: 0, node: 1234n })
  assert.equal(encodeScanCursor(2, 17n), (2n << 53n) + 17n)
  assert.deepEqual(decodeScanCursor(String((2n << 53n) + 17n)), { master: 2, node: 17n })
  assert.equal(encodeScanCursor(1023, (1n << 53n) - 1n), (1n << 63n) - 1n, 'the largest cursor fits a signed 64-bit integer')
  assert.equal(encodeScanCursor(1024, 0n), null)
  assert.equal(encodeScanCursor(0, 1n << 53n), null)
  // strtoul, as Redis: an empty cursor is 0, '+' is allowed, a negative one wraps, anything else is invalid.
  assert.deepEqual(decodeScanCursor(''), { master: 0, node: 0n })
  assert.deepEqual(decodeScanCursor('+5'), { master: 0, node: 5n })
  assert.equal(decodeScanCursor('-1')?.master, 2047)
  assert.equal(decodeScanCursor('18446744073709551615')?.master, 2047)
  for (const bad of ['18446744073709551616', 'abc', ' 1', '1 ', '0x10', '1.5']) assert.equal(decodeScanCursor(bad), null, bad)
  assert.equal(scanReply(9007199254740993n, Buffer.from('*1\r\n$1\r\na\r\n')).toString(), '*2\r\n$16\r\n9007199254740993\r\n*1\r\n$1\r\na\r\n')
})

test('INFO keyspace: which INFO arguments include it, and the sum of the masters\' sections', () => {
  assert.equal(infoHasKeyspace([]), true)
  for (const s of ['keyspace', 'all', 'everything', 'default']) assert.equal(infoHasKeyspace(['server', s]), true)
  assert.equal(infoHasKeyspace(['server', 'clients']), false)
  assert.equal(mergeKeyspaceSections(['# Keyspace\r\n', '# Keyspace\r\n']), '# Keyspace\r\n')
  assert.equal(mergeKeyspaceSections([
    '# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n',
    '# Keyspace\r\n',
    '# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000\r\n'
  ]), '# Keyspace\r\ndb0:keys=15,expires=8,avg_ttl=2500\r\n')
  assert.equal(mergeKeyspaceSections(['# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0,subexpiry=0\r\n', '# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0,subexpiry=1\r\n']),
    '# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0,subexpiry=1\r\n')
})

test('INFO: the Keyspace section is replaced in a bulk (RESP2) or verbatim (RESP3) reply, the rest untouched', () => {
  const text = '# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n'
  const bulk = Buffer.from(`$${text.length}\r\n${text}\r\n`)
  const merged = '# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n'
  const want = text.replace('keys=1', 'keys=3')
  assert.equal(withKeyspace(bulk, merged).toString(), `$${want.length}\r\n${want}\r\n`)
  const verbatim = Buffer.from(`=${text.length + 4}\r\ntxt:${text}\r\n`)
  assert.equal(withKeyspace(verbatim, merged).toString(), `=${want.length + 4}\r\ntxt:${want}\r\n`)
  // A section in the middle, and an empty one.
  const middle = '# Keyspace\r\n\r\n# Later\r\nx:1\r\n'
  assert.equal(withKeyspace(Buffer.from(`$${middle.length}\r\n${middle}\r\n`), merged).toString(), `$${middle.length + 32}\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n\r\n# Later\r\nx:1\r\n\r\n`)
  // Binary bytes elsewhere in the text go back unchanged.
  const binary = '# X\r\nk:\xff\xfe\r\n\r\n# Keyspace\r\n'
  const binaryWant = `# X\r\nk:\xff\xfe\r\n\r\n${merged}`
  assert.deepEqual(withKeyspace(Buffer.from(`$${binary.length}\r\n${binary}\r\n`, 'latin1'), merged), Buffer.from(`$${binaryWant.length}\r\n${binaryWant}\r\n`, 'latin1'))
})
