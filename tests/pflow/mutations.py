"""Deterministic mutations of the fixture workflows, for the differential test against pflow's
parser (record_mutations.py records pflow 0.16.0's answers; tests/test_pflow_md.py compares).
Standard library only: it runs under pflow's venv too."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SEED = 7
COUNT = 600
INSERTS = ["```", "- x", "## Notes", "    - y: 1", "- k: |", "  more", "* z", "- next: end",
           "- retry: {max: 2}", "- a: 'q''s'", "- b: 1.5", "- c: yes", "- d: ~", "Some prose.",
           "", "- e: ${x.y}", "  - f: 1", "##", "### ", "- ttl: 0m"]  # fmt: skip


def cases(files: list[str]) -> list[str]:
    rng = random.Random(SEED)
    texts = [(HERE / f).read_text() for f in files]
    out = []
    for _ in range(COUNT):
        lines = rng.choice(texts).splitlines()
        for _ in range(rng.randint(1, 3)):
            op, j = rng.random(), rng.randrange(len(lines))
            if op < 0.3:
                del lines[j]
            elif op < 0.6:
                lines.insert(j, rng.choice(INSERTS))
            else:
                lines[j] = lines[j][: rng.randrange(len(lines[j]) + 1)]
        out.append("\n".join(lines) + "\n")
    return out


def digest(result: dict[str, Any]) -> str:
    text = json.dumps(result, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
