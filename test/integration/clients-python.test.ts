import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { runScript } from '../helpers/run-program.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// redis-py 4.3.4 (Debian python3-redis) through respool. Each test pipes a script to
// /usr/bin/python3 (Debian's interpreter, which has the module) and checks what it prints.

const PYTHON = '/usr/bin/python3'
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

// Shared by every script: argv[1] is respool's port, argv[2] the upstream Redis's port
// (used only to check what actually happened in Redis).
const PRELUDE = `
import sys, json, time, threading, redis
PORT = int(sys.argv[1])
REDIS_PORT = int(sys.argv[2])

def client(**kw):
    return redis.Redis(host='127.0.0.1', port=PORT, decode_responses=True,
                       socket_timeout=30, socket_connect_timeout=5, **kw)

def direct(db=0):
    return redis.Redis(host='127.0.0.1', port=REDIS_PORT, db=db, decode_responses=True, socket_timeout=30)

def until(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise Exception('timed out waiting for ' + what)
        time.sleep(0.01)

def js(value):
    return json.dumps(value, separators=(',', ':'))

def out(*values):
    print(*values, flush=True)

def blocked_clients():
    # As the application sees it: clients respool lists as blocked (flags=b), whether their
    # command is parked inside respool or blocks on a connection of its own.
    return sum(1 for c in client().client_list() if 'b' in c['flags'])
`

/** Runs a script under Debian's python3 and returns its stdout lines. */
async function python (script: string, timeoutMs = 30000): Promise<string[]> {
  return await runScript(PYTHON, ['-', String(proxy.address.port), String(redis.port)], PRELUDE + script, timeoutMs)
}

test('redis-py: pipelines (plain and transactional), a 10000-command pipeline and threads sharing a connection pool', { timeout: 60000 }, async () => {
  const lines = await python(`
r = client()
out('ping', r.ping())
p = r.pipeline(transaction=False)
p.set('py:p', 1)
p.incrby('py:p', 41)
p.get('py:p')
p.rpush('py:l', 'a', 'b')
p.lrange('py:l', 0, -1)
p.hset('py:h', mapping={'f': 'v', 'g': 'w'})
p.hgetall('py:h')
p.incr('py:l')
p.get('py:missing')
res = p.execute(raise_on_error=False)
out(js([('E:' + str(x)) if isinstance(x, Exception) else x for x in res]))

p = r.pipeline()  # transaction=True: MULTI ... EXEC
p.set('py:t', 'x')
p.append('py:t', 'y')
p.get('py:t')
out(js(p.execute()))

p = r.pipeline(transaction=False)
for i in range(5000):
    p.set('py:big:%d' % i, 'v%d' % i)
    p.get('py:big:%d' % i)
res = p.execute()
out('big', all(res[2 * i] is True and res[2 * i + 1] == 'v%d' % i for i in range(5000)))

errors = []
def worker(n):
    try:
        for i in range(200):
            key = 'py:thr:%d' % n
            r.set(key, i)
            if r.get(key) != str(i):
                errors.append('thread %d read %r after writing %d' % (n, r.get(key), i))
            r.incr('py:thr:total')
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
out('threads', js(errors), r.get('py:thr:total'))
`)
  assert.deepEqual(lines, [
    'ping True',
    JSON.stringify([true, 42, '42', 2, ['a', 'b'], 2, { f: 'v', g: 'w' }, 'E:WRONGTYPE Operation against a key holding the wrong kind of value', null]),
    JSON.stringify([true, 2, 'xy']),
    'big True',
    'threads [] 1600'
  ])
})

test('redis-py: WATCH conflict raises WatchError, and optimistic-locking increments from 4 threads lose nothing', { timeout: 60000 }, async () => {
  const lines = await python(`
r = client()
other = client()
r.set('py:w', 'start')
with r.pipeline() as pipe:
    pipe.watch('py:w')
    current = pipe.get('py:w')
    other.set('py:w', 'theirs')
    pipe.multi()
    pipe.set('py:w', current + ':mine')
    try:
        pipe.execute()
        out('no conflict')
    except redis.WatchError:
        out('watch-error')
out(r.get('py:w'))

with r.pipeline() as pipe:
    pipe.watch('py:w')
    current = pipe.get('py:w')
    pipe.multi()
    pipe.set('py:w', current + ':mine')
    out(js(pipe.execute()))
out(r.get('py:w'))

# Watching, then giving up (reset sends UNWATCH).
with r.pipeline() as pipe:
    pipe.watch('py:w')
    pipe.reset()
out(r.set('py:w', 'after-unwatch'))

conflicts = [0]
def incr_tx(pipe):
    value = int(pipe.get('py:ctr') or 0)
    pipe.multi()
    pipe.set('py:ctr', value + 1)
errors = []
def worker():
    try:
        for _ in range(50):
            r.transaction(incr_tx, 'py:ctr')
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
out('counter', r.get('py:ctr'), js(errors))
`)
  assert.deepEqual(lines, [
    'watch-error',
    'theirs',
    '[true]',
    'theirs:mine',
    'True',
    'counter 200 []'
  ])
})

test('redis-py: pub/sub with a get_message loop: subscribe, psubscribe, PING while subscribed, unsubscribe', { timeout: 60000 }, async () => {
  const lines = await python(`
r = client()
p = r.pubsub()

def next_message(timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = p.get_message(timeout=0.2)
        if m is not None:
            return m
    raise Exception('no message within %ss' % timeout)

def show(m):
    out(js([m['type'], m['pattern'], m['channel'], m['data']]))

p.subscribe('py:ch')
show(next_message())
p.psubscribe('py:p*')
show(next_message())
out('published', r.publish('py:ch', 'hello'))
show(next_message())
out('published', r.publish('py:pat', 'by pattern'))
show(next_message())
p.ping('hi')
show(next_message())

def burst():
    for i in range(100):
        r.publish('py:ch', 'm%d' % i)
t = threading.Thread(target=burst)
t.start()
got = [next_message()['data'] for _ in range(100)]
t.join()
out('burst in order', got == ['m%d' % i for i in range(100)])

p.unsubscribe('py:ch')
show(next_message())
p.punsubscribe()
show(next_message())
out('late', r.publish('py:ch', 'late'))
out('nothing', p.get_message(timeout=0.3))
p.close()
until(lambda: direct().pubsub_numsub('py:ch') == [('py:ch', 0)], 'no subscribers in Redis')
out(r.set('py:after-pubsub', 'ok'), r.get('py:after-pubsub'))
`)
  assert.deepEqual(lines, [
    JSON.stringify(['subscribe', null, 'py:ch', 1]),
    JSON.stringify(['psubscribe', null, 'py:p*', 2]),
    'published 1',
    JSON.stringify(['message', null, 'py:ch', 'hello']),
    'published 1',
    JSON.stringify(['pmessage', 'py:p*', 'py:pat', 'by pattern']),
    JSON.stringify(['pong', null, null, 'hi']),
    'burst in order True',
    JSON.stringify(['unsubscribe', null, 'py:ch', 1]),
    JSON.stringify(['punsubscribe', null, 'py:p*', 0]),
    'late 0',
    'nothing None',
    'True ok'
  ])
})

test('redis-py: BLPOP times out with None, hands off a pushed element, and serves three blocked threads', { timeout: 60000 }, async () => {
  const lines = await python(`
r = client()
t0 = time.monotonic()
out('timeout', r.blpop('py:empty', timeout=1), time.monotonic() - t0 >= 0.9)
t0 = time.monotonic()
out('fractional', r.blpop('py:empty', timeout=0.3), time.monotonic() - t0 >= 0.25)

base = blocked_clients()
def pusher():
    until(lambda: blocked_clients() > base, 'the BLPOP to block in Redis')
    r.rpush('py:q2', 'job-1')
t = threading.Thread(target=pusher)
t.start()
out('handoff', js(r.blpop(['py:q1', 'py:q2'], timeout=10)))
t.join()
out('after', r.llen('py:q2'), r.set('py:after-blpop', 1))

results = []
def waiter(n):
    results.append(r.blpop('py:jobs', timeout=10))
threads = [threading.Thread(target=waiter, args=(n,)) for n in range(3)]
for th in threads: th.start()
until(lambda: blocked_clients() >= base + 3, 'three blocked clients')
r.rpush('py:jobs', 'a', 'b', 'c')
for th in threads: th.join()
out('three', js(sorted(v[1] for v in results)))
out('brpoplpush', r.brpoplpush('py:empty', 'py:dst', timeout=0.2), r.rpush('py:src', 'x'), r.brpoplpush('py:src', 'py:dst', timeout=1))
`)
  assert.deepEqual(lines, [
    'timeout None True',
    'fractional None True',
    'handoff ["py:q2","job-1"]',
    'after 0 True',
    'three ["a","b","c"]',
    'brpoplpush None 1 x'
  ])
})

test('redis-py: Redis.from_url(redis://…/3) keeps keys in db 3, for plain commands, pipelines, transactions and BLPOP', { timeout: 60000 }, async () => {
  const lines = await python(`
r3 = redis.Redis.from_url('redis://127.0.0.1:%d/3' % PORT, decode_responses=True, socket_timeout=30)
r0 = client()
out(r3.set('py:iso', 'three'), r0.set('py:iso', 'zero'))
out(r3.get('py:iso'), r0.get('py:iso'), direct(3).get('py:iso'), direct(0).get('py:iso'))
out('dbsize3', r3.dbsize(), direct(3).dbsize())

p = r3.pipeline(transaction=False)
for i in range(200):
    p.set('py:iso:%d' % i, i)
p.execute()
p = r3.pipeline()
p.incr('py:iso:n')
p.get('py:iso')
out('tx', js(p.execute()))
out('db0 sees', r0.get('py:iso:199'), r0.get('py:iso:n'), 'db3 sees', r3.get('py:iso:199'), direct(3).get('py:iso:n'))

errors = []
def worker(client, tag):
    try:
        for i in range(200):
            client.set('py:iso:mix', tag)
            v = client.get('py:iso:mix')
            if v != tag:
                errors.append('%s read %r' % (tag, v))
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=worker, args=(c, tag)) for c, tag in [(r3, 'three'), (r0, 'zero')]]
for t in threads: t.start()
for t in threads: t.join()
out('interleaved', js(errors))

base = blocked_clients()
def pusher():
    until(lambda: blocked_clients() > base, 'the db-3 BLPOP to block')
    r0.rpush('py:iso:q', 'for-db0')
    r3.rpush('py:iso:q', 'for-db3')
t = threading.Thread(target=pusher)
t.start()
out('blpop', js(r3.blpop('py:iso:q', timeout=10)))
t.join()
out('left in db0', js(direct(0).lrange('py:iso:q', 0, -1)))
`)
  assert.deepEqual(lines, [
    'True True',
    'three zero three zero',
    'dbsize3 1 1',
    'tx [1,"three"]',
    'db0 sees None None db3 sees 199 1',
    'interleaved []',
    'blpop ["py:iso:q","for-db3"]',
    'left in db0 ["for-db0"]'
  ])
})
