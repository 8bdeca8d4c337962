# syntax=docker/dockerfile:1
# lmsvr: build with the Swift toolchain, run on a slim Debian with only the libraries it links.
ARG SWIFT_IMAGE=swift:6.3-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev libsqlite3-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Resolve dependencies in their own layer so source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY bench ./bench
RUN swift build -c release --product lmsvr --static-swift-stdlib \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/lmsvr" /out/lmsvr \
 && strip /out/lmsvr

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libsqlite3-0 ca-certificates tzdata curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/lmsvr --create-home lmsvr \
 && install -d -o lmsvr -g lmsvr -m 0700 /var/lib/lmsvr/journal
COPY --from=build /out/lmsvr /usr/local/bin/lmsvr
USER lmsvr
WORKDIR /var/lib/lmsvr
# The settle journal: mount a volume here (the compose file and the Kubernetes manifests do).
VOLUME /var/lib/lmsvr/journal
ENV DATABASE_URL=sqlite:////var/lib/lmsvr/lmsvr.db \
    JOURNAL_DIR=/var/lib/lmsvr/journal \
    HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["lmsvr"]
CMD ["serve"]
