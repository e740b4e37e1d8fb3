import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { runScript } from '../helpers/run-program.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// ruby-redis 4.8 (Debian ruby-redis) through respool. Each test pipes a script to `ruby -`
// and checks what it prints.

let redis: RedisServer
let proxy: ProxyServer
// Five connections: four may be pinned, three of them by blocking commands (the test blocks three at once).
const POOL_SIZE = 5

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: POOL_SIZE })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

// Shared by every script: ARGV[0] is respool's port, ARGV[1] the upstream Redis's port (used
// only to check what actually happened in Redis).
const PRELUDE = `
require 'redis'
require 'json'
$stdout.sync = true
PORT = Integer(ARGV[0])
REDIS_PORT = Integer(ARGV[1])

def client(**opts)
  Redis.new(host: '127.0.0.1', port: PORT, timeout: 30, connect_timeout: 5, **opts)
end

def direct(db = 0)
  Redis.new(host: '127.0.0.1', port: REDIS_PORT, db: db, timeout: 30)
end

def until_true(what, timeout = 5.0)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
  until yield
    raise "timed out waiting for #{what}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    sleep 0.01
  end
end

# As the application sees it: clients respool lists as blocked (flags=b), whether their command
# is parked inside respool or blocks on a connection of its own.
def blocked_clients
  client.call('CLIENT', 'LIST').split("\n").count { |line| line =~ / flags=\S*b/ }
end

def js(value)
  JSON.generate(value)
end
`

/** Runs a script with `ruby -` and returns its stdout lines. */
async function ruby (script: string, timeoutMs = 30000): Promise<string[]> {
  return await runScript('ruby', ['-', String(proxy.address.port), String(redis.port)], PRELUDE + script, timeoutMs)
}

test('ruby-redis: plain commands, pipelined (with an error inside) and threads sharing one client', { timeout: 60000 }, async () => {
  const lines = await ruby(`
r = client
puts r.ping
puts r.set('rb:k', 'hello'), r.get('rb:k')
bin = (0..255).map(&:chr).join.b + "\\r\\n"
r.set('rb:bin', bin)
puts r.get('rb:bin').b == bin
puts js(r.pipelined { |p|
  p.set('rb:p', 1)
  p.incrby('rb:p', 41)
  p.get('rb:p')
  p.rpush('rb:l', %w[a b])
  p.lrange('rb:l', 0, -1)
  p.hset('rb:h', 'f', 'v')
  p.hgetall('rb:h')
  p.get('rb:missing')
})
begin
  r.pipelined { |p| p.set('rb:s', 'x'); p.incr('rb:s'); p.get('rb:s') }
  puts 'no error'
rescue Redis::CommandError => e
  puts "pipeline error: #{e.message}"
end
puts r.get('rb:s')
futures = nil
big = r.pipelined { |p| futures = (0...5000).map { |i| p.set("rb:big:#{i}", "v#{i}"); p.get("rb:big:#{i}") } }
puts "big #{futures.each_with_index.all? { |f, i| f.value == "v#{i}" } && big.length == 10000}"

errors = Queue.new
threads = (0...8).map do |n|
  Thread.new do
    200.times do |i|
      r.set("rb:thr:#{n}", i)
      v = r.get("rb:thr:#{n}")
      errors << "thread #{n} read #{v.inspect} after #{i}" unless v == i.to_s
      r.incr('rb:thr:total')
    end
  rescue => e
    errors << e.inspect
  end
end
threads.each(&:join)
puts "threads #{errors.size} #{r.get('rb:thr:total')}"
`)
  assert.deepEqual(lines, [
    'PONG',
    'OK',
    'hello',
    'true',
    JSON.stringify(['OK', 42, '42', 2, ['a', 'b'], 1, { f: 'v' }, null]),
    'pipeline error: ERR value is not an integer or out of range',
    'x',
    'big true',
    'threads 0 1600'
  ])
})

test('ruby-redis: multi, and watch + multi returning nil on a conflict', { timeout: 60000 }, async () => {
  const lines = await ruby(`
r = client
other = client
puts js(r.multi { |tx| tx.set('rb:t', 'a'); tx.append('rb:t', 'b'); tx.get('rb:t'); tx.incr('rb:t:n') })

r.set('rb:w', 'start')
result = r.watch('rb:w') do |rd|
  current = rd.get('rb:w')
  other.set('rb:w', 'theirs')
  rd.multi { |tx| tx.set('rb:w', current + ':mine') }
end
puts "conflict #{result.inspect}"
puts r.get('rb:w')

result = r.watch('rb:w') do |rd|
  current = rd.get('rb:w')
  rd.multi { |tx| tx.set('rb:w', current + ':mine') }
end
puts "clean #{result.inspect}"
puts r.get('rb:w')

r.watch('rb:w')
puts r.unwatch
puts r.set('rb:w', 'after-unwatch')

# Optimistic-locking increments from 4 threads, each with its own client.
errors = Queue.new
threads = (0...4).map do
  Thread.new do
    c = client
    50.times do
      loop do
        done = c.watch('rb:ctr') do |rd|
          value = rd.get('rb:ctr').to_i
          rd.multi { |tx| tx.set('rb:ctr', value + 1) }
        end
        break unless done.nil?
      end
    end
    c.close
  rescue => e
    errors << e.inspect
  end
end
threads.each(&:join)
puts "counter #{r.get('rb:ctr')} #{errors.size}"
`)
  assert.deepEqual(lines, [
    JSON.stringify(['OK', 2, 'ab', 1]),
    'conflict nil',
    'theirs',
    'clean ["OK"]',
    'theirs:mine',
    'OK',
    'OK',
    'counter 200 0'
  ])
})

test('ruby-redis: blpop times out with nil, and hands off an element pushed from another thread', { timeout: 60000 }, async () => {
  const lines = await ruby(`
r = client
pusher = client
t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
puts "timeout #{r.blpop('rb:empty', timeout: 1).inspect} #{Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0 >= 0.9}"

base = blocked_clients
t = Thread.new do
  until_true('the BLPOP to block in Redis') { blocked_clients > base }
  pusher.rpush('rb:q2', 'job-1')
end
puts "handoff #{js(r.blpop(['rb:q1', 'rb:q2'], timeout: 10))}"
t.join
puts "after #{r.llen('rb:q2')} #{r.set('rb:after', 1)}"

clients = (0...3).map { client }
results = Queue.new
threads = clients.map { |c| Thread.new { results << c.blpop('rb:jobs', timeout: 10) } }
until_true('three blocked clients') { blocked_clients >= base + 3 }
pusher.rpush('rb:jobs', %w[a b c])
threads.each(&:join)
puts "three #{js((0...3).map { results.pop[1] }.sort)}"
puts "brpoplpush #{r.brpoplpush('rb:empty', 'rb:dst', timeout: 1).inspect}"
`)
  assert.deepEqual(lines, [
    'timeout nil true',
    'handoff ["rb:q2","job-1"]',
    'after 0 OK',
    'three ["a","b","c"]',
    'brpoplpush nil'
  ])
})

test('ruby-redis: subscribe receives messages a thread publishes, then the client works normally again', { timeout: 60000 }, async () => {
  const lines = await ruby(`
r = client
pub = client
events = []
unsubscribed = []
publisher = nil
r.subscribe('rb:ch', 'rb:other') do |on|
  on.subscribe do |channel, count|
    events << "subscribe #{channel} #{count}"
    if count == 2
      publisher = Thread.new do
        5.times { |i| pub.publish('rb:ch', "m#{i}") }
        pub.publish('rb:other', 'stop')
      end
    end
  end
  on.message do |channel, message|
    events << "message #{channel} #{message}"
    r.unsubscribe if message == 'stop'
  end
  on.unsubscribe do |channel, count|
    unsubscribed << [channel, count]
  end
end
publisher.join
events.each { |e| puts e }
# UNSUBSCRIBE without arguments: Redis picks the order, so only the set and the counts matter.
puts "unsubscribed #{js(unsubscribed.map(&:first).sort)} counts #{js(unsubscribed.map(&:last))}"
puts "late #{pub.publish('rb:ch', 'late')}"
puts r.set('rb:after-sub', 'ok'), r.get('rb:after-sub')

r.psubscribe('rb:p*') do |on|
  on.psubscribe { |pattern, count| Thread.new { pub.publish('rb:pat', 'by pattern') } }
  on.pmessage do |pattern, channel, message|
    puts "pmessage #{pattern} #{channel} #{message}"
    r.punsubscribe
  end
end
puts r.incr('rb:after-psub')

r.subscribe_with_timeout(0.3, 'rb:quiet') { |on| on.message { |_c, m| puts "unexpected #{m}" } } rescue puts "subscribe timeout #{$!.class}"
r2 = client
puts r2.get('rb:after-sub')
until_true('no subscribers left in Redis') { direct.pubsub('numsub', 'rb:ch', 'rb:other') == ['rb:ch', 0, 'rb:other', 0] }
puts 'released'
`)
  assert.deepEqual(lines, [
    'subscribe rb:ch 1',
    'subscribe rb:other 2',
    'message rb:ch m0',
    'message rb:ch m1',
    'message rb:ch m2',
    'message rb:ch m3',
    'message rb:ch m4',
    'message rb:other stop',
    'unsubscribed ["rb:ch","rb:other"] counts [1,0]',
    'late 0',
    'OK',
    'ok',
    'pmessage rb:p* rb:pat by pattern',
    '1',
    'subscribe timeout Redis::TimeoutError',
    'ok',
    'released'
  ])
})

test('ruby-redis: db: option (and a /db URL) isolate keys from db 0, also in multi and blpop', { timeout: 60000 }, async () => {
  const lines = await ruby(`
r4 = client(db: 4)
u4 = Redis.new(url: "redis://127.0.0.1:#{PORT}/4", timeout: 30)
r0 = client
puts r4.set('rb:iso', 'four'), r0.set('rb:iso', 'zero')
puts [r4.get('rb:iso'), u4.get('rb:iso'), r0.get('rb:iso'), direct(4).get('rb:iso'), direct(0).get('rb:iso')].join(' ')
puts "dbsize4 #{r4.dbsize}"
puts js(r4.multi { |tx| tx.incr('rb:iso:n'); tx.get('rb:iso') })
puts "db0 n #{r0.get('rb:iso:n').inspect} db4 n #{direct(4).get('rb:iso:n')}"
puts js(r4.pipelined { |p| p.set('rb:iso:p', 'piped'); p.get('rb:iso') })
puts "db0 p #{r0.get('rb:iso:p').inspect}"

errors = Queue.new
threads = [[r4, 'four'], [r0, 'zero']].map do |c, tag|
  Thread.new do
    200.times do
      c.set('rb:iso:mix', tag)
      v = c.get('rb:iso:mix')
      errors << "#{tag} read #{v}" unless v == tag
    end
  end
end
threads.each(&:join)
puts "interleaved #{errors.size}"

base = blocked_clients
t = Thread.new do
  until_true('the db-4 BLPOP to block') { blocked_clients > base }
  r0.rpush('rb:iso:q', 'for-db0')
  u4.rpush('rb:iso:q', 'for-db4')
end
puts "blpop #{js(r4.blpop('rb:iso:q', timeout: 10))}"
t.join
puts "left in db0 #{js(direct(0).lrange('rb:iso:q', 0, -1))}"
puts "select #{r0.select(4)} #{r0.get('rb:iso')}"
`)
  assert.deepEqual(lines, [
    'OK',
    'OK',
    'four four zero four zero',
    'dbsize4 1',
    '[1,"four"]',
    'db0 n nil db4 n 1',
    '["OK","four"]',
    'db0 p nil',
    'interleaved 0',
    'blpop ["rb:iso:q","for-db4"]',
    'left in db0 ["for-db0"]',
    'select OK four'
  ])
})
