#!/bin/sh
# A scripted reviewer that is never satisfied.
set -e
echo "strict reviewer: cycle $AGENTCTL_CYCLE of $AGENTCTL_MAX_CYCLES"
agentctl msg send --verdict changes_requested "Still not good enough (cycle $AGENTCTL_CYCLE)."
