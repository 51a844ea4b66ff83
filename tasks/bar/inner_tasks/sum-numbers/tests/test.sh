#!/bin/bash
# Reward 1 when /app/sum.txt holds the sum of /app/numbers.txt (reward.txt).
expected=$(python3 -c 'print(sum(int(l) for l in open("/app/numbers.txt") if l.strip()))')
if [ "$(tr -d '[:space:]' < /app/sum.txt 2>/dev/null)" = "${expected}" ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo "expected ${expected}" >&2
  echo 0 > /logs/verifier/reward.txt
fi
