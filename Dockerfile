# syntax=docker/dockerfile:1
#
# The speechjobs image: the service and its runtime dependencies in a venv, on a slim Python base, run as
# an unprivileged user; nothing is written at run time, so a read-only root filesystem works.
#
#   docker build -t speechjobs:0.1.0 .
#   docker build --build-arg EXTRAS=otel -t speechjobs:0.1.0-otel .   # with OpenTelemetry tracing
#   docker run --rm -p 8080:8080 -e SPEECHJOBS_AMQP_URL=... -e SPEECHJOBS_MONGODB_URL=... speechjobs:0.1.0
#
# Pinned to a patch release; bump it deliberately (and pin the digest too where builds must be reproducible:
# python:3.11.x-slim-bookworm@sha256:...).
ARG PYTHON_VERSION=3.11.17

FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Dependencies first, from pyproject.toml's [project].dependencies and the runtime extras named in EXTRAS
# (comma-separated; `otel` is the one meant for images, never dev or devdb), so that this layer is rebuilt
# only when pyproject.toml changes, not on every source change.
ARG EXTRAS=""
COPY pyproject.toml ./
RUN EXTRAS="${EXTRAS}" python -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [d for e in filter(None, os.environ["EXTRAS"].split(",")) for d in p["optional-dependencies"][e]]))' \
        > requirements.txt \
 && cat requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels -r requirements.txt

# Then the project itself, and one venv holding it and its dependencies. The venv gets no pip: the base
# image's pip installs into it, offline, from the wheels just built (hence no version pins: DL3013). pip
# compiles the bytecode here, as nothing may be written at run time.
COPY README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-index --find-links /wheels "speechjobs${EXTRAS:+[$EXTRAS]}" \
 && /opt/venv/bin/speechjobs --help > /dev/null


FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="speechjobs" \
      org.opencontainers.image.description="Cloud speech-job notifications to one deduplicated event stream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# No installer at run time (the base image's pip, setuptools and wheel are only scanner findings here);
# a fixed numeric user, which Kubernetes' runAsNonRoot can verify.
RUN python -m pip uninstall --yes --quiet --disable-pip-version-check --root-user-action=ignore \
        pip setuptools wheel \
 && groupadd --system --gid 10001 speechjobs \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin speechjobs

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
# 8080: the consumer's /healthz, /readyz and /metrics (SPEECHJOBS_HTTP_PORT); 8000: the receiver's
# callbacks and probes (`speechjobs receive`, SPEECHJOBS_RECEIVER_PORT).
EXPOSE 8080 8000
# Both processes handle SIGTERM themselves (the consumer finishes in-flight work within
# SPEECHJOBS_SHUTDOWN_GRACE_S, the receiver answers the requests in flight), so they run as PID 1.
ENTRYPOINT ["speechjobs"]
CMD ["run"]
