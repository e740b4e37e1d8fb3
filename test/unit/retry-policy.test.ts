import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isRefusal, backoffMs, runsAgainHarmlessly } from '../../src/routing/retry-policy.js'
import { RespCommand } from '../../src/protocol/resp-command.js'

const reply = (s: string): Buffer => Buffer.from(s)

test('refusals: the error replies that say Redis did not run the command', () => {
  assert.ok(isRefusal(reply('-READONLY You can\'t write against a read only replica.\r\n')))
  assert.ok(isRefusal(reply('-READONLY You can\'t write against a read only replica. script: 41d0, on @user_script:1.\r\n')))
  assert.ok(isRefusal(reply('-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to \'no\'.\r\n')))
  assert.ok(isRefusal(reply('-LOADING Redis is loading the dataset in memory\r\n')))
  for (const other of ['-ERR unknown command\r\n', '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n', '-BUSY Redis is busy\r\n', '-READONLYX\r\n', '-LOAD\r\n', '+READONLY \r\n']) {
    assert.equal(isRefusal(reply(other)), false, other)
  }
})

test('backoff: none after a replica\'s refusal (the topology moved on), doubling up to 500 ms after -LOADING and -MASTERDOWN', () => {
  assert.equal(backoffMs(null, 1), 0)
  assert.equal(backoffMs(reply('-READONLY You can\'t write against a read only replica.\r\n'), 3), 0)
  const loading = reply('-LOADING Redis is loading the dataset in memory\r\n')
  assert.deepEqual([1, 2, 3, 4, 5, 6, 20].map((n) => backoffMs(loading, n)), [25, 50, 100, 200, 400, 500, 500])
  const masterdown = reply('-MASTERDOWN Link with MASTER is down\r\n')
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => backoffMs(masterdown, n)), [50, 100, 200, 400, 500])
})

test('commands that may run again behind a refused one: reads, PING and ECHO; not writes, PUBLISH or scripts', () => {
  const c = (...args: string[]): RespCommand => RespCommand.fromArgs(args.map((a) => Buffer.from(a)))
  for (const harmless of [c('GET', 'k'), c('PING'), c('ECHO', 'x'), c('HGETALL', 'h'), c('EVAL_RO', 'return 1', '0'), c('XRANGE', 's', '-', '+')]) assert.ok(runsAgainHarmlessly(harmless), harmless.name)
  for (const effect of [c('SET', 'k', 'v'), c('INCR', 'k'), c('PUBLISH', 'ch', 'm'), c('EVAL', 'return 1', '0'), c('SCRIPT', 'LOAD', 'x'), c('NOSUCHCOMMAND')]) assert.equal(runsAgainHarmlessly(effect), false, effect.name)
  assert.equal(runsAgainHarmlessly(null), false)
})
