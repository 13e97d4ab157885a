#!/bin/sh
# demo-agent.sh: a stand-in for an AI coding agent, bundled with `agentctl demo`.
#
# agentctl runs it like any other agent: in the run's own git worktree (its current
# directory), on the run's own branch, with the task in $AGENTCTL_PROMPT. It does what a
# coding agent would do with the demo's sample repository: reads the task, fixes the bug in
# calc.py, adds a test and a NOTES.md, checks its work and commits it on its branch.
#
# Needs only sh, git and coreutils; runs the tests with python3 when there is a working one.
# Try it yourself:  agentctl run --repo SAMPLE_REPO "Fix the bug in calc.py" -- sh demo-agent.sh
set -eu

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
indent() { sed 's/^/    /'; }
pause() { sleep "$1" 2>/dev/null || sleep 1; }
# git with the agent's own identity and plain output, whatever the machine's configuration says.
agent_git() {
    git -c user.name=demo-agent -c user.email=agent@agentctl.invalid -c commit.gpgsign=false \
        -c core.hooksPath=/dev/null -c color.ui=never -c core.pager=cat "$@"
}
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE 2>/dev/null || true

task=${AGENTCTL_PROMPT:-}
if [ -z "$task" ]; then
    say "demo-agent: no task: AGENTCTL_PROMPT is empty (run me through agentctl)" >&2
    exit 2
fi
if [ ! -f calc.py ]; then
    say "demo-agent: no calc.py in $(pwd): I only know the sample repository of agentctl demo" >&2
    exit 2
fi

step "reading the task"
say "task: $task"
say "working in $(pwd)"
say "on branch $(agent_git rev-parse --abbrev-ref HEAD)"
pause 0.6

step "looking around"
agent_git ls-files | indent
pause 0.5

step "reading calc.py"
grep -n 'def \|return' calc.py | indent
say "average() divides by len(numbers) + 1: one too many"
pause 0.7

step "editing calc.py"
sed 's/sum(numbers) \/ (len(numbers) + 1)/sum(numbers) \/ len(numbers)/' calc.py >calc.py.new
mv calc.py.new calc.py
agent_git diff -U1 -- calc.py | indent
pause 0.6

step "adding a test"
cat >test_average.py <<'PY'
"""Tests for calc.average, added by demo-agent."""

import unittest

from calc import average


class AverageTest(unittest.TestCase):
    def test_average_of_several_numbers(self):
        self.assertEqual(average([2, 4, 6]), 4)

    def test_average_of_one_number(self):
        self.assertEqual(average([5]), 5)


if __name__ == "__main__":
    unittest.main()
PY
say "wrote test_average.py (2 tests)"
pause 0.5

step "running tests"
if command -v python3 >/dev/null 2>&1 && python3 -c 'import unittest' >/dev/null 2>&1; then
    if out=$(PYTHONDONTWRITEBYTECODE=1 python3 -m unittest -v 2>&1); then
        printf '%s\n' "$out" | indent
    else
        printf '%s\n' "$out" | indent
        say "demo-agent: the tests fail; leaving the work uncommitted" >&2
        exit 1
    fi
else
    say "demo-agent: python3 not found; checking the fix by reading the code instead" >&2
    if ! grep -q 'return sum(numbers) / len(numbers)$' calc.py; then
        say "demo-agent: the fix did not apply" >&2
        exit 1
    fi
    say "average() now divides by len(numbers): ok"
fi
pause 0.5

step "writing NOTES.md"
cat >NOTES.md <<NOTES
# Notes from demo-agent

Task: $task

- \`average()\` in calc.py divided the sum by \`len(numbers) + 1\`, so every average came
  out too small. It now divides by \`len(numbers)\`.
- Added test_average.py: \`python3 -m unittest\` runs it with the existing tests.
- Not done: \`average([])\` still raises ZeroDivisionError; worth deciding what it should do.
NOTES
say "wrote NOTES.md"
pause 0.4

step "committing"
agent_git add calc.py test_average.py NOTES.md
agent_git commit --quiet -m "Fix average() dividing by one too many" \
    -m "average() divided by len(numbers) + 1. Adds test_average.py and NOTES.md."
agent_git log --oneline --no-decorate -1 | indent
agent_git show --stat --format= HEAD | indent
say "done"
