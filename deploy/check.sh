#!/usr/bin/env bash
# deploy/check.sh — static checks of the Kubernetes deployment (deploy/kubernetes, the
# Dockerfile, the node scripts); no cluster needed. What it checks: deploy/check_manifests.py.
# Takes about a second; ci/test.sh runs it.
#
# Needs python3 with PyYAML: the first of $PYTHON, python3, /usr/bin/python3 that imports yaml;
# as root it installs Debian's python3-yaml when none does. The Kubernetes API schema check
# runs when that python also imports the `kubernetes` client, e.g.
#   python3 -m venv /tmp/k8s && /tmp/k8s/bin/pip install pyyaml kubernetes
#   PYTHON=/tmp/k8s/bin/python bash deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

has_yaml() { command -v "$1" >/dev/null 2>&1 && "$1" -c 'import yaml' 2>/dev/null; }

py=
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
    if has_yaml "$cand"; then
        py=$cand
        break
    fi
done
if [[ -z $py ]]; then
    [[ $EUID == 0 ]] || { echo "deploy/check.sh: no python3 with PyYAML (apt-get install python3-yaml, as root)"; exit 1; }
    echo "deploy/check.sh: installing python3-yaml (PyYAML)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends python3-yaml >/dev/null \
        || { apt-get update >/dev/null
             apt-get install -y --no-install-recommends python3-yaml >/dev/null; }
    py=/usr/bin/python3
    has_yaml "$py" || { echo "deploy/check.sh: python3-yaml installed, but $py cannot import yaml"; exit 1; }
fi
exec "$py" deploy/check_manifests.py . "$@"
