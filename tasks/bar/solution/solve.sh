#!/usr/bin/env bash
# Oracle optimizer of the bar benchmark. Harbor runs it in main as the `agent` user: it teaches
# the rule agent three more skills (sum, word count, sorted unique lines), commits that,
# evaluates it on the train split and submits it.
set -euo pipefail
cd /work/agent

cat >> rule_agent/skills.py <<'EOF'


SKILLS += [
    Skill(
        name="sum-numbers",
        pattern=re.compile(r"The file " + _PATH.format("src") + r" holds one integer per line\. "
                           r"Write their sum, as a single integer, to " + _PATH.format("dst")),
        commands=lambda m: [f"python3 -c 'import sys; print(sum(int(l) for l in open(sys.argv[1]) if l.strip()))' "
                            f"{_q(m['src'])} > {_q(m['dst'])}"],
    ),
    Skill(
        name="count-words",
        pattern=re.compile(r"Count the words \(whitespace-separated\) in " + _PATH.format("src")
                           + r" and write the number to " + _PATH.format("dst")),
        commands=lambda m: [f"wc -w < {_q(m['src'])} | tr -d ' ' > {_q(m['dst'])}"],
    ),
    Skill(
        name="sort-unique",
        pattern=re.compile(r"Write the distinct lines of " + _PATH.format("src")
                           + r", sorted alphabetically, one per line, to " + _PATH.format("dst")),
        commands=lambda m: [f"LC_ALL=C sort -u {_q(m['src'])} > {_q(m['dst'])}"],
    ),
]
EOF

git add rule_agent/skills.py
git -c user.name=oracle -c user.email=oracle@vero.invalid commit --quiet -m "Teach sums, word counts and sorted unique lines"
commit="$(git rev-parse HEAD)"

vero harbor status
vero harbor eval --split train --commit "$commit"
vero harbor eval --split validation --commit "$commit"
vero harbor submit --commit "$commit"
