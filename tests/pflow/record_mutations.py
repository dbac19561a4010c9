"""Record pflow 0.16.0's parse of every mutation (tests/pflow/mutations.py) as a digest of the IR,
or the error line (data only). Run with pflow installed:

    /tmp/pflowvenv/bin/python tests/pflow/record_mutations.py
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mutations import HERE, cases, digest
from pflow.core.markdown_parser import parse_markdown

files = sorted(p.name for p in HERE.glob("*.pflow.md"))
expected = []
for text in cases(files):
    try:
        r = parse_markdown(text)
        expected.append(
            {"ir": digest({"ir": r.ir, "description": r.description, "metadata": r.metadata})}
        )
    except Exception as exc:  # MarkdownParseError, and pflow's own crashes on odd input
        expected.append({"error": type(exc).__name__, "line": getattr(exc, "line", None)})
(HERE / "mutations.expected.json").write_text(
    json.dumps({"files": files, "expected": expected}) + "\n"
)
print(sum("ir" in e for e in expected), "parsed,", sum("error" in e for e in expected), "rejected")
