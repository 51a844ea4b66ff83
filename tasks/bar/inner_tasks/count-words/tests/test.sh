#!/bin/bash
# Several rewards (reward.json): "pass" (exact count) is what scores; "close" (within 10%) is a metric.
python3 - <<'PY'
import json
want = len(open("/app/essay.txt").read().split())
try:
    got = int(open("/app/word_count.txt").read().strip())
except (OSError, ValueError):
    got = None
close = got is not None and abs(got - want) <= 0.1 * want
json.dump({"pass": 1.0 if got == want else 0.0, "close": 1.0 if close else 0.0},
          open("/logs/verifier/reward.json", "w"))
PY
