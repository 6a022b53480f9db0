# One image for tandemadm, the engine, the controller and the node agent
# (helm/tandem runs bin/tandem-controller.js and bin/tandem-node-agent.js from it).
# Node 24 strips TypeScript types natively, so the image ships the sources as they
# are in git; the build stage only installs production dependencies.
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no jest/swc/typescript, and no `node` package (the base image is Node 24).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-slim
# NBD clients and filesystem tools the node agent drives on the host's behalf.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnbd-bin nbd-client xfsprogs e2fsprogs util-linux mount fuse3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
ENV NODE_ENV=production UV_THREADPOOL_SIZE=16 PATH=/app/bin:$PATH
RUN ln -s /app/bin/tandemadm.js /usr/local/bin/tandemadm \
 && ln -s /app/bin/tandem-controller.js /usr/local/bin/tandem-controller \
 && ln -s /app/bin/tandem-node-agent.js /usr/local/bin/tandem-node-agent
# The engine needs the host's block devices and /run/tandem; the node agent's
# DaemonSet runs it privileged. tandemadm alone (status, dump) works as any user.
USER node
ENTRYPOINT ["tandemadm"]
CMD ["--help"]
