# The operator image: Debian 12's Python 3.11 (the version the project is tested with), non-root, no build
# tools in the final stage. kopf runs the handlers package; configuration comes from env.
#
# BASE is a Debian 12 image: users build from the official one (the default); `make image` builds from a
# Debian 12 made locally by debootstrap (hack/image.sh), as no container registry is reachable there.
# Dependencies are installed from wheels checked against the lock's hashes (pip --require-hashes); the
# package itself is copied, not built, so nothing unhashed (no build backend) is fetched.
# Build context: .dockerignore lets in only what the stages copy.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
# Where pip finds the CA bundle; hack/image.sh mounts the host's there when the egress re-signs TLS.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# Versions come from the base's Debian release (12); pinning exact ones would break on its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /src/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --cert "$PIP_CERT" --require-hashes --only-binary=:all: \
      --no-deps -r /src/requirements.lock \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin lbpair
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/lbpair PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["kopf", "run", "--all-namespaces", "--standalone", "-m", "lbpair.handlers"]
# The package last: an edit rebuilds this layer and the labels only (each layer is a full copy on vfs).
COPY operator/lbpair /opt/lbpair/lbpair
# Set by the build (hack/image.sh): --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)".
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lbpair-operator" \
      org.opencontainers.image.description="Kubernetes operator for a bare-metal nginx + keepalived load-balancer pair" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
