# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --ignore-scripts
COPY src ./src
COPY bin ./bin
RUN npx tsc -p tsconfig.json

# Runtime stage: production dependencies and the compiled proxy only.
FROM node:24-slim
ENV NODE_ENV=production \
    RESPOOL_HOST=0.0.0.0 \
    RESPOOL_PORT=6380
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY bin ./bin
USER node
EXPOSE 6380
# node runs as PID 1: respool handles SIGTERM itself (drain, then exit 0).
ENTRYPOINT ["node", "bin/respool.js"]
