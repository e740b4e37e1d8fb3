#!/usr/bin/env -S node --max-semi-space-size=4
// V8's young generation is capped at 2 × 4 MB: left to itself it grows to 2 × 16 MB under the
// first burst of connections and stays there, about 1.7 KB of RSS per client for 10,000 idle
// clients, for a few more (shorter) scavenges under load. The Docker image's entry point passes
// the same flag; `node bin/respool.js` does not (add it, or set it in NODE_OPTIONS).
import { main } from '../dist/src/cli.js'

await main(process.argv)
