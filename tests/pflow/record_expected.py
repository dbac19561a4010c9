"""Record pflow 0.16.0's own parse of every fixture here (data only; run with pflow installed):

    python3 -m venv /tmp/pflowvenv && /tmp/pflowvenv/bin/pip install pflow-cli==0.16.0
    pip download --no-binary :all: --no-deps pflow-cli==0.16.0  # the sdist, unpacked at SDIST
    /tmp/pflowvenv/bin/python tests/pflow/record_expected.py SDIST

Copies the sdist's *.pflow.md and every complete example of its guide (a markdown fence holding
`## Steps`) here, and writes NAME.expected.json next to each. tests/test_pflow_md.py compares.
"""

import json
import sys
from pathlib import Path

from markdown_it import MarkdownIt
from pflow.core.markdown_parser import parse_markdown

sdist = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pflow-sdist/pflow_cli-0.16.0")
out = Path(__file__).resolve().parent
cases = {}
for p in sorted(sdist.rglob("*.pflow.md")):
    cases[p.name.removesuffix(".pflow.md")] = p.read_text()
md = MarkdownIt("commonmark")
for g in sorted((sdist / "src/pflow/guide").rglob("*.md")):
    n = 0
    for tok in md.parse(g.read_text()):
        if (
            tok.type == "fence"
            and "## Steps" in tok.content
            and tok.info.strip() in ("markdown", "md", "")
        ):
            n += 1
            cases[f"guide-{g.stem}-{n}"] = tok.content
for name, text in cases.items():
    (out / f"{name}.pflow.md").write_text(text)
    try:
        r = parse_markdown(text)
        rec = {"ir": r.ir, "title": r.title, "description": r.description, "metadata": r.metadata}
    except Exception as exc:
        rec = {"error": str(exc), "line": getattr(exc, "line", None)}
    (out / f"{name}.expected.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(name, "error" if "error" in rec else "ok", rec.get("error", "")[:80])
for p in sorted(list(out.glob("edge-*.pflow.md")) + list((out / "errors").glob("*.pflow.md"))):
    text = p.read_text()
    try:
        r = parse_markdown(text)
        rec = {"ir": r.ir, "title": r.title, "description": r.description, "metadata": r.metadata}
    except Exception as exc:
        rec = {"error": str(exc), "line": getattr(exc, "line", None)}
    p.with_name(p.name.replace(".pflow.md", ".expected.json")).write_text(
        json.dumps(rec, indent=1, sort_keys=True) + "\n"
    )
    print(p.name, "error" if "error" in rec else "ok", rec.get("error", "")[:80], rec.get("line"))
