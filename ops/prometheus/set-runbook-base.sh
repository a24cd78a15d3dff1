#!/usr/bin/env bash
# Points every alert's runbook_url at another copy of docs/OPERATIONS.md.
#
#   ops/prometheus/set-runbook-base.sh BASE
#
# BASE is the address of OPERATIONS.md itself, without an anchor, e.g.
#   https://git.example.com/ops/orderd/-/blob/v1.2.0/docs/OPERATIONS.md
#   https://docs.example.com/orderd/OPERATIONS.html
# Rewrites alerts.yml and alerts.test.yml next to this script (the anchors, one per alert,
# stay), so `promtool test rules alerts.test.yml` passes before and after. Run it again to
# change the base again.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" || "$1" == *"#"* ]]; then
    echo "usage: $0 BASE   (the URL of OPERATIONS.md, without #anchor)" >&2
    exit 2
fi
base="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for file in "$here/alerts.yml" "$here/alerts.test.yml"; do
    # Replace whatever precedes '#<anchor>"' on every runbook_url line. '|' delimits, so the
    # base may hold '/'; '&' and '\' would be special in the replacement: escape them.
    escaped="$(printf '%s' "$base" | sed -e 's/[&\\|]/\\&/g')"
    sed -i -E "s|(runbook_url: \")[^\"#]*#|\1${escaped}#|" "$file"
done
echo "runbook_url base is now $base"
