#!/usr/bin/env bash
# Installs the Debian packages given that are not installed yet, with a single `apt-get update`
# (these machines run as root). `prometheus` is checked by its `promtool` command and installed
# without its recommended extras (only promtool is used).
set -euo pipefail
missing=()
lean=()
for package in "$@"; do
    case "$package" in
        prometheus) command -v promtool >/dev/null 2>&1 || lean+=("$package") ;;
        *) dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package") ;;
    esac
done
if [ "${#missing[@]}" -gt 0 ] || [ "${#lean[@]}" -gt 0 ]; then
    echo "Installing ${missing[*]} ${lean[*]} ..." >&2
    apt-get update -qq
    if [ "${#missing[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    if [ "${#lean[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}"
    fi
fi
