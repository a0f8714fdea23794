# syntax=docker/dockerfile:1
#
# mysql-idle-exporter image: a virtualenv with the package and its dependencies on
# python:3.11-slim, running as uid 65532. Build: docker build -t mysql-idle-exporter .
#
# Both stages use the same base image so the venv's interpreter path and ABI match; pin it by
# digest (--build-arg BASE_IMAGE=python:3.11-slim@sha256:...) in a release pipeline. The tests
# build it on a Debian bookworm base of their own (any image with python, venv and pip will do).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies ship manylinux wheels (psutil, bcrypt, aiohttp): no compiler needed. Only
# wheels are accepted, so a missing wheel fails the build here instead of compiling.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip setuptools wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# Bytecode at optimization level 2 only, the level the image runs at (below).
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-compile --only-binary=:all: /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -m compileall -q -j 0 -o 2 /opt/venv \
    && PYTHONOPTIMIZE=2 /opt/venv/bin/mysql-idle-exporter --version


FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="mysql-idle-exporter" \
      org.opencontainers.image.description="Prometheus exporter that warns before MySQL/MariaDB drops idle sessions" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONOPTIMIZE=2: no docstrings (and no assert statements) in memory, which takes about
# 1.5 MiB off every sidecar's resident memory (benchmarks/README.md). The exporter's asserts
# only narrow types; its --help text is not made of docstrings.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONOPTIMIZE=2 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

# python:3.11-slim deletes its standard library's bytecode, and nothing can write it at run
# time (PYTHONDONTWRITEBYTECODE, uid 65532, a read-only root file system): without this, every
# start would compile the 170 standard modules the exporter imports from source: 2.2 MiB more
# resident memory and 0.4 s more CPU at each start (benchmarks/README.md). About 11 MB.
RUN python -m compileall -q -j 0 -o 2 \
        -x '/(test|tests|idle_test|idlelib|tkinter|turtledemo|lib2to3|ensurepip)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

# Where --state.dir points in the Helm chart, writable by whatever uid the exporter runs as
# (1777, like /tmp and like a Kubernetes emptyDir): a volume mounted there that takes the
# image's mode (podman's emptyDir, a docker named volume) then is too, under a read-only
# root file system.
RUN mkdir -p /var/lib/mysql-idle-exporter \
    && chown 65532:65532 /var/lib/mysql-idle-exporter \
    && chmod 1777 /var/lib/mysql-idle-exporter

# A numeric uid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 9864
ENTRYPOINT ["mysql-idle-exporter"]
