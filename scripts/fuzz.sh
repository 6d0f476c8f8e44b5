#!/usr/bin/env bash
# Run every Fuzz* target in the module for a short, fixed time each.
#
#   FUZZTIME=10s scripts/fuzz.sh          (default 10s per target)
#
# Targets are found by grepping `func Fuzz` in *_test.go files, so a new
# one is picked up without editing this script. Each runs alone
# (-run '^$' skips the unit tests, -fuzz '^FuzzX$' selects exactly one
# target, as go test requires). A failing input is written by go test to
# PKG/testdata/fuzz/FuzzX/ — commit it as a regression seed once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-10s}"

mapfile -t targets < <(
  grep -rE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . \
    | grep -vE '^\./(vendor|bench)/' \
    | sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|\1 \2|' \
    | sort -u
)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no Fuzz targets found" >&2
  exit 1
fi

failed=()
for t in "${targets[@]}"; do
  pkg="./${t% *}"
  name="${t#* }"
  echo "=== fuzz $pkg $name ($FUZZTIME)"
  if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"; then
    failed+=("$pkg $name")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets passed"
