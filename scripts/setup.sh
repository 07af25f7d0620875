#!/usr/bin/env bash
# Idempotent set-up: system packages through apt, then .venv with the project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(softhsm2 opensc poppler-utils qpdf fonts-liberation2 fonts-texgyre libnss3-tools jq faketime postgresql docker-compose chromium)
missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: installing system packages needs root (apt-get); run as root or install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test,bench]'
    touch "$stamp"
fi
