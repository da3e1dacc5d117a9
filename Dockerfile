# syntax=docker/dockerfile:1
# The rotator image: a virtualenv at /opt/rotator (the same layout as the
# systemd install), run as an unprivileged numeric user so that Kubernetes can
# enforce runAsNonRoot. Build from the repository root:
#   docker build -t registry.example/rotator:0.1.0 .

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotator ./rotator
COPY docker/install.sh ./docker/
# Wheels of rotator and of every dependency, then the install script that the
# deployment tests run as well (tests/deploy/test_systemd_box.py installs into a
# real systemd's /opt/rotator with it): a virtualenv from those wheels alone,
# with compiled bytecode, so nothing is written at run time on the read-only root.
RUN python -m pip wheel --wheel-dir /wheels . \
 && sh docker/install.sh /opt/rotator /wheels python

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 rotator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/rotator --shell /usr/sbin/nologin rotator \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/rotator \
 && install -d -m 0755 /etc/rotator
COPY --from=build /opt/rotator /opt/rotator
# STATE_DIRECTORY: where the spool of rotated grants goes ($STATE_DIRECTORY/spool,
# as under systemd); mount a volume there.
ENV PATH=/opt/rotator/bin:$PATH \
    STATE_DIRECTORY=/var/lib/rotator \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/rotator
EXPOSE 9464
ENTRYPOINT ["rotator"]
CMD ["run", "-c", "/etc/rotator/rotator.yaml"]
