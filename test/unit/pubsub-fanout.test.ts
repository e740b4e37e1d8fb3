import { test } from 'node:test'
import assert from 'node:assert/strict'
import { globMatch } from '../../src/pubsub/glob.js'
import { confirmation, messageTopic, withHead } from '../../src/pubsub/fanout-frames.js'

test('glob matching follows Redis stringmatchlen', () => {
  const cases: Array<[string, string, boolean]> = [
    ['*', '', false], ['*', 'abc', true], ['a*', 'abc', true], ['a*c', 'abc', true], ['a*d', 'abc', false],
    ['a?c', 'abc', true], ['a?c', 'ac', false], ['h[ae]llo', 'hello', true], ['h[ae]llo', 'hillo', false],
    ['h[^e]llo', 'hallo', true], ['h[^e]llo', 'hello', false], ['h[a-b]llo', 'hbllo', true], ['h[b-a]llo', 'hallo', true],
    ['h[a-b]llo', 'hcllo', false], ['a\\*b', 'a*b', true], ['a\\*b', 'axb', false], ['**a', 'ba', true],
    ['a[', 'a[', false], ['a[b', 'ab', true], ['', '', true], ['', 'a', false], ['abc', 'abc', true], ['abc', 'abcd', false],
    ['*a*b*c*', 'xaxbxcx', true], ['*a*b*c*', 'xaxcxbx', false], ['fan:a*', 'fan:all', true], ['a*', 'b', false],
    ['[\\]]', ']', true], ['a\\', 'a\\', true]
  ]
  // '*' does not match the empty string in Redis either (the loop never runs; the pattern is left over).
  for (const [pattern, subject, want] of cases) assert.equal(globMatch(pattern, subject), want, `${pattern} ~ ${subject}`)
})

test('confirmations carry the name bytes and the count, in either protocol', () => {
  assert.equal(confirmation(2, 'subscribe', 'a\r\n', 3).toString('latin1'), '*3\r\n$9\r\nsubscribe\r\n$3\r\na\r\n\r\n:3\r\n')
  assert.equal(confirmation(3, 'punsubscribe', null, 0).toString('latin1'), '>3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n')
  assert.equal(confirmation(2, 'unsubscribe', null, 1).toString('latin1'), '*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n')
  assert.deepEqual(confirmation(2, 'subscribe', '\u00ff\u0000', 1), Buffer.concat([Buffer.from('*3\r\n$9\r\nsubscribe\r\n$2\r\n'), Buffer.from([255, 0]), Buffer.from('\r\n:1\r\n')]))
})

test('the routing name of a message is its channel, of a pmessage its pattern; RESP3 differs in the first byte only', () => {
  const message = Buffer.from('*3\r\n$7\r\nmessage\r\n$4\r\nc\r\nd\r\n$2\r\nhi\r\n', 'latin1')
  assert.equal(messageTopic(message), 'c\r\nd')
  assert.equal(messageTopic(Buffer.from('*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\ncd\r\n$0\r\n\r\n')), 'c*')
  const pushed = withHead(message, 0x3e)
  assert.equal(pushed.toString('latin1'), '>' + message.toString('latin1').slice(1))
  assert.equal(message[0], 0x2a)
})
