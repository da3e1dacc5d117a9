#!/bin/sh
# Installs rotator into a virtualenv from a directory of wheels, with no index:
#   docker/install.sh PREFIX WHEELHOUSE [PYTHON]
# The image (Dockerfile) and the deployment tests (tests/deploy: the systemd box,
# the pod constraints) run this same script, so what the tests prove is what the
# image does. Build the wheelhouse outside, where the package registry is
# reachable: `pip wheel --wheel-dir WHEELHOUSE .`
set -eu
prefix=$1
wheelhouse=$2
python=${3:-python3}
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet --no-index --find-links "$wheelhouse" rotator
# Compiled bytecode now, so nothing is written at run time on a read-only root.
"$prefix/bin/python" -m compileall -q "$prefix" >/dev/null
"$prefix/bin/rotator" --version >/dev/null
