#!/bin/bash
# Partial credit (reward.json {"reward": ...}): share of the expected lines in the right place.
python3 - <<'PY'
import json
want = sorted(set(open("/app/names.txt").read().split()))
try:
    got = open("/app/unique.txt").read().splitlines()
except OSError:
    got = []
right = sum(1 for a, b in zip(got, want) if a == b)
reward = right / max(len(want), len(got))
json.dump({"reward": round(reward, 4)}, open("/logs/verifier/reward.json", "w"))
PY
