#!/bin/sh
# A scripted reviewer: requests changes in the first cycle, approves in the next.
set -e
echo "reviewer: cycle $AGENTCTL_CYCLE of $AGENTCTL_MAX_CYCLES"
# EXAMPLE_SLEEP=N makes the step take N seconds (only at hop EXAMPLE_SLEEP_HOP, if set).
if [ -z "$EXAMPLE_SLEEP_HOP" ] || [ "$EXAMPLE_SLEEP_HOP" = "$AGENTCTL_HOP" ]; then
    sleep "${EXAMPLE_SLEEP:-0}"
fi
if [ "$AGENTCTL_CYCLE" = 1 ]; then
    agentctl msg send --verdict changes_requested "Handle the empty input and add a test for it."
else
    agentctl msg send --verdict approved "Looks good now."
fi
