# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
RUN npx tsc -p tsconfig.json

# Runtime stage: production dependencies and the compiled proxy only.
FROM node:24-slim
ENV NODE_ENV=production \
    RESPOOL_HOST=0.0.0.0 \
    RESPOOL_PORT=6380 \
    RESPOOL_METRICS_PORT=9180
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
USER node
EXPOSE 6380 9180
# Ready = upstream reachable and not draining (node's fetch: the slim image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.RESPOOL_METRICS_PORT||9180)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node runs as PID 1 and respool handles SIGTERM itself: drain, then exit 0. With
# RESPOOL_WORKERS=N (N > 1) it is the primary: it drains every worker, then exits 0; give the
# container N free CPUs, or the workers only contend with each other.
STOPSIGNAL SIGTERM
# --max-semi-space-size=4: the same cap on V8's young generation as bin/respool.js's first line.
ENTRYPOINT ["node", "--max-semi-space-size=4", "bin/respool.js"]
