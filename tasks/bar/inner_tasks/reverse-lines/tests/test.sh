#!/bin/bash
# Reward (reward.json {"reward": ...}) 1 when /app/reversed.txt is /app/poem.txt upside down.
python3 - <<'PY'
import json
want = open("/app/poem.txt").read().splitlines()[::-1]
try:
    got = open("/app/reversed.txt").read().splitlines()
except OSError:
    got = None
json.dump({"reward": 1.0 if got == want else 0.0}, open("/logs/verifier/reward.json", "w"))
PY
