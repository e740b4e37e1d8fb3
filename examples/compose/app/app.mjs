// A sample app: 50 "threads", each with its own connection to respool, counting in Redis.
// respool serves all of them over at most RESPOOL_POOL_SIZE connections (see /metrics).
import net from 'node:net'

const host = process.env.RESPOOL_HOST ?? '127.0.0.1'
const port = Number(process.env.RESPOOL_PORT ?? 6380)
const password = process.env.RESPOOL_APP_PASSWORD
const encode = (...args) => `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')

for (let worker = 0; worker < 50; worker++) {
  const socket = net.connect({ host, port })
  socket.on('connect', () => {
    if (password !== undefined) socket.write(encode('AUTH', password))
    const tick = () => {
      socket.write(encode('INCR', `hits:${worker}`))
      setTimeout(tick, 100)
    }
    tick()
  })
  socket.on('data', () => {})
  socket.on('error', (err) => { console.error(`worker ${worker}: ${err.message}`) })
}
console.log(`50 workers counting through respool at ${host}:${port}`)
