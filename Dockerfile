# One image for tandemadm, the engine, the controller and the node agent
# (helm/tandem runs bin/tandem-controller.js and bin/tandem-node-agent.js from it).
# Node 24 strips TypeScript types natively, so the image ships the sources as they
# are in git; the build stage only installs production dependencies.
#
# This file is the recipe a user's CI builds against a registry. `npm run image`
# builds the same image without Docker or a registry (scripts/image): it reads this
# file's final stage and image/packages.txt, and scripts/image/recipe.test.ts fails
# when the two disagree. Keep to the instructions it understands (see recipe.ts).

# The same Node as package-lock.json's `node` package (the test checks).
ARG NODE_VERSION=24.21.0

FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no jest/swc/typescript, and no `node` package (the binary comes from this stage).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# The protobuf files tandem-csi loads (the CSI spec's csi.proto and the kubelet's plugin
# registration API), from their projects' own Go modules, each with its LICENSE.
FROM golang:1.26-bookworm AS protos
COPY scripts/fetch-protos.sh /tmp/fetch-protos.sh
RUN bash /tmp/fetch-protos.sh /protos

FROM debian:bookworm-slim
# NBD clients and filesystem tools the node agent drives on the host's behalf.
COPY image/packages.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY --from=protos /protos ./protos
ENV NODE_ENV=production UV_THREADPOOL_SIZE=16 PATH=/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && ln -s /app/bin/tandemadm.js /usr/local/bin/tandemadm \
 && ln -s /app/bin/tandem-controller.js /usr/local/bin/tandem-controller \
 && ln -s /app/bin/tandem-node-agent.js /usr/local/bin/tandem-node-agent \
 && ln -s /app/bin/tandem-csi.js /usr/local/bin/tandem-csi
# The engine needs the host's block devices and /run/tandem; the node agent's
# DaemonSet runs it privileged. tandemadm alone (status, dump) works as any user.
USER node
ENTRYPOINT ["tandemadm"]
CMD ["--help"]
