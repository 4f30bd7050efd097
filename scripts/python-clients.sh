#!/usr/bin/env bash
# Installs the Python clients that the real-client tests drive into a
# virtualenv at target/python-clients (clients_oras.rs looks there): oras-py,
# the ORAS project's Python client, pinned. Does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-clients
oras_version=0.2.43
check="import importlib.metadata as m, sys; sys.exit(m.version('oras') != '$oras_version')"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  exit 0
fi
echo "installing oras-py $oras_version into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "oras==$oras_version"
