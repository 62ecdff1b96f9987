#!/usr/bin/env bash
# The pull-request review step of .github/workflows/pr.yml: build the report of the reproduced
# workspace against BASE, publish it to GitHub, and exit with the gate's verdict.
#
#   .github/scripts/pr-review.sh BASE     (run from the project root, after `dvc repro`)
#
# Exit code, kept from `signflow pr-report`: 0 the gate passed, 1 a statistical guard failed
# (e.g. test accuracy worse beyond its margin), anything else the report could not be built.
# With GITHUB_ACTIONS=true, `--github` (signflow.review.github.publish) appends the job summary to
# $GITHUB_STEP_SUMMARY and writes the step outputs to $GITHUB_OUTPUT: gate, failures, report,
# comment. Elsewhere it writes neither, so the script runs the same on a laptop.
# tests/review/test_github.py runs it with those variables pointed at temporary files.
set -euo pipefail

BASE="${1:?usage: pr-review.sh BASE  (a git revision, e.g. origin/main)}"
REPORT="reports/pr.md"
IMAGES_DIR="reports/pr"  # the base-vs-head PNGs the report links, uploaded with it

status=0
signflow pr-report --base "$BASE" --out "$REPORT" --images-dir "$IMAGES_DIR" --gate --github || status=$?

# Lines starting with :: are GitHub workflow commands (an annotation on the run); elsewhere plain text.
case "$status" in
  0) echo "pr-review: gate passed against $BASE" ;;
  1) echo "::error title=pr-report gate::a statistical guard failed against $BASE: see the job summary" ;;
  *) echo "::error title=pr-report::signflow pr-report failed (exit $status): the report was not built" ;;
esac
exit "$status"
