#!/bin/sh
# A scripted coder: appends one pass (its cycle, and the prompt with any feedback) to WORK.md.
# While it works, NOTES.tmp holds its unfinished notes.
set -e
echo "coder: step $AGENTCTL_STEP_ID, cycle $AGENTCTL_CYCLE of $AGENTCTL_MAX_CYCLES, $AGENTCTL_REMAINING_HOPS hops left"
echo "pass $AGENTCTL_CYCLE: half done" > NOTES.tmp
# EXAMPLE_SLEEP=N makes the step take N seconds (only at hop EXAMPLE_SLEEP_HOP, if set).
if [ -z "$EXAMPLE_SLEEP_HOP" ] || [ "$EXAMPLE_SLEEP_HOP" = "$AGENTCTL_HOP" ]; then
    sleep "${EXAMPLE_SLEEP:-0}"
fi
printf '## pass %s\n%s\n\n' "$AGENTCTL_CYCLE" "$1" >> WORK.md
rm -f NOTES.tmp
echo "coder: wrote WORK.md"
