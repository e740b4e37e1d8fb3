export { ProxyServer, createProxy, type ProxyServerOptions, type ServerStats } from './proxy-server.js'
export { validateConfig, parseUpstreamUrl, DEFAULTS, type ProxyConfig, type ProxyOptions, type UpstreamAddress } from './config.js'
export * from './errors.js'
export { createLogger, type Logger } from './ops/logger.js'
