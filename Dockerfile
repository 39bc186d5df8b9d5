# syntax=docker/dockerfile:1
# The BlindAI server image: `blindai serve` as a non-root user, nothing else.
#
#   docker build -t REGISTRY/blindai:1.0.0a1 .
#
# Used by deploy/kubernetes (simulation, sev-snp and tdx overlays). The gramine-sgx overlay needs
# a Gramine image instead (docs/deploy-gramine-sgx.md). Not built by this project's CI: its
# machines have no container engine. Pin the base image by digest for a reproducible, auditable
# image: in a confidential container the image digest is what the client ends up trusting.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# Only what the wheel needs (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m venv /opt/blindai \
 && /opt/blindai/bin/pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
 && /opt/blindai/bin/pip install --no-cache-dir --disable-pip-version-check '.[server]'

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 blindai \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin blindai
COPY --from=build /opt/blindai /opt/blindai
ENV PATH=/opt/blindai/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 9923 unattested (certificate, evidence, collateral), 9924 attested inference, 9925 management,
# 9926 attested gRPC (Open Inference Protocol)
EXPOSE 9923 9924 9925 9926
# numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd
USER 10001:10001
ENTRYPOINT ["blindai", "serve"]
# No TEE flag here: `--tee auto` probes the devices and refuses to start without one.
# Simulation (no TEE, protects nothing) must be asked for: `docker run IMAGE --simulation --host 0.0.0.0`.
CMD ["--tee", "auto", "--host", "0.0.0.0"]
