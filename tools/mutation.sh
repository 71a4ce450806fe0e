#!/usr/bin/env bash
# The mutation check (issue 11): mutmut mutates the decision code (cds_service/rules/,
# cds_service/facts/, cards.py, findings.py) one change at a time and runs, for each mutant, the
# fast tests that reach the mutated function (cases, fact, rule, card and knowledge tests; see
# [tool.mutmut] in pyproject.toml). A mutant no test kills is a gap, or must be explained
# (tools/mutation-report.md). Not run in CI: about 15 minutes on 2 cores.
#
#   tools/mutation.sh              # the whole run; then the summary and the survivors
#   .venv/bin/mutmut show NAME     # the diff of one mutant
#   .venv/bin/mutmut run NAME...   # re-run some mutants after adding a test
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'; }
.venv/bin/python -m pip show -q mutmut >/dev/null 2>&1 || .venv/bin/pip install -q 'mutmut==3.8.1'
rm -rf mutants                      # a fresh copy: no verdict cached from older code or tests
.venv/bin/mutmut run --max-children "${JOBS:-$(nproc)}" >mutants.log 2>&1 || {
    tail -n 40 mutants.log; exit 1; }
.venv/bin/mutmut export-cicd-stats >/dev/null
.venv/bin/python - <<'PY'
import json
stats = json.load(open("mutants/mutmut-cicd-stats.json"))
print("mutants:", stats["total"], {k: v for k, v in stats.items() if k != "total" and v})
PY
.venv/bin/mutmut results
