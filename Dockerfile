# syntax=docker/dockerfile:1
# One image for every Pomona component; the command picks one:
#   node --max-semi-space-size=2 operator/main.ts | node gateway/main.ts | node node-agent/main.ts
# Node 24 runs the TypeScript sources directly (type stripping), so there is no build step.

FROM node:24-slim AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; node-llama-cpp brings its prebuilt llama.cpp for this platform.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json ./
COPY crds/ ./crds/
COPY kube/ ./kube/
COPY model-source/ ./model-source/
COPY pki/ ./pki/
COPY operator/ ./operator/
COPY gateway/ ./gateway/
COPY node-agent/ ./node-agent/
# The node image's unprivileged user (uid 1000), which the chart's securityContext expects.
USER node
EXPOSE 8080 8081 8090
# The gateway by default, with its Node flags (crds/api/well-known.ts, gatewayNodeFlags).
CMD ["node", "--initial-old-space-size=128", "gateway/main.ts"]
