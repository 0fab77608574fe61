#!/usr/bin/env bash
# Run the Array API standard's test suite (data-apis/array-api-tests) against tracejit, with
# every dtype and both extensions (linalg, fft).
#
#   tests/array_api/run.sh [extra pytest arguments]      (from the repository root)
#
# The suite is pinned to commit 55fcc601 (2026-04-03).  It is taken from $ARRAY_API_TESTS_SRC
# when that holds a checkout of it, else cloned from GitHub at the pinned commit; either way it
# runs from a scratch copy (pytest writes caches next to the tests).  MAX_EXAMPLES (default 5)
# is hypothesis's examples per test; the JSON report lands in $REPORT (default
# array-api-report.json in the scratch folder, whose path is printed).
set -euo pipefail

PINNED_COMMIT=55fcc601
REPO_URL=https://github.com/data-apis/array-api-tests.git
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="${ARRAY_API_TESTS_SRC:-/work/shared/array-api-tests}"
WORK="$(mktemp -d -t tracejit-array-api-XXXXXX)"

if [[ -d "$SRC/array_api_tests" ]]; then
    cp -r "$SRC" "$WORK/suite"
else
    git clone --quiet --recurse-submodules "$REPO_URL" "$WORK/suite"
    git -C "$WORK/suite" checkout --quiet "$PINNED_COMMIT"
    git -C "$WORK/suite" submodule update --quiet --init
fi
python -m pip install --quiet -r "$WORK/suite/requirements.txt"

cd "$WORK/suite"
echo "array-api-tests ($PINNED_COMMIT) in $WORK/suite"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" ARRAY_API_TESTS_MODULE=tracejit \
    python -m pytest array_api_tests -q -p no:cacheprovider -W ignore \
    --max-examples="${MAX_EXAMPLES:-5}" --json-report --json-report-file="${REPORT:-$WORK/array-api-report.json}" \
    "$@"
