#!/usr/bin/env bash
# Compare the ABI of a freshly built library with the checked-in baseline.
# Usage: check-abi.sh BASELINE.abi LIBRARY.so HEADERS_DIR
# Passes when nothing changed or symbols were only added; fails when an
# exported function or variable was removed or changed, unless the SONAME
# major version was bumped (then the baseline must be regenerated).
set -euo pipefail
baseline=$1 library=$2 headers=$3

soname_of_baseline=$(sed -n "s/.*soname='\([^']*\)'.*/\1/p" "$baseline" | head -n 1)
soname_now=$(readelf -d "$library" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')

current=$(mktemp --suffix=.abi)
report=$(mktemp)
trap 'rm -f "$current" "$report"' EXIT
abidw --headers-dir "$headers" --drop-private-types --no-corpus-path --out-file "$current" "$library"

set +e
abidiff --no-corpus-path --deleted-fns --changed-fns --deleted-vars --changed-vars \
    "$baseline" "$current" > "$report"
rc=$?
set -e
if (( rc & 1 )); then
    cat "$report"
    echo "check-abi: abidiff failed (exit $rc)"
    exit 1
fi
if (( rc == 0 )); then
    echo "check-abi: ABI identical to $baseline ($soname_now)"
    exit 0
fi

removed_or_changed=$(grep -E 'changes summary' "$report" | grep -oE '[0-9]+ (Removed|Changed)' \
    | awk '{s += $1} END {print s + 0}')
if (( (rc & 8) == 0 )) && [[ $removed_or_changed == 0 ]]; then
    echo "check-abi: compatible change (only additions) against $baseline"
    grep -E 'changes summary' "$report" | sed 's/^/  /'
    exit 0
fi
if [[ "$soname_now" != "$soname_of_baseline" ]]; then
    echo "check-abi: incompatible change with a new SONAME ($soname_of_baseline -> $soname_now):"
    echo "           allowed; regenerate the baseline with 'make abi-baseline'"
    exit 0
fi
cat "$report"
echo "check-abi: INCOMPATIBLE change against $baseline without a SONAME bump"
echo "           (bump SUBSAE_VERSION_MAJOR in include/subsae.h and record it in CHANGELOG.md)"
exit 1
