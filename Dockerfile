# The operator image: Python 3.11 on Debian 12 (the version the project is tested with), non-root,
# no build tools in the final stage. kopf runs the handlers package; configuration comes from env.
# Build context: .dockerignore lets in only what the build stage copies.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps -r requirements.lock
COPY pyproject.toml ./
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11.7-slim-bookworm
# Set by the build: docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lbpair-operator" \
      org.opencontainers.image.description="Kubernetes operator for a bare-metal nginx + keepalived load-balancer pair" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.7-slim-bookworm"
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 65532 --no-create-home lbpair
USER 65532:65532
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["kopf", "run", "--all-namespaces", "--standalone", "-m", "lbpair.handlers"]
