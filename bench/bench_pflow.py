"""A pflow workflow with an independent fan-out (issue 13), run as pflow runs it (document order,
one step after another) and in data order (`--data-order`): the measured speedup against the
ideal one from the critical path.

    python bench/bench_pflow.py            # 3 runs of each, median
    python bench/bench_pflow.py --runs 1

Shape: an input, four shell steps that each `sleep 0.3` and read only the input, then a join that
reads all four and the prepare step. Document order: 6 steps in a row (~1.2 s of sleep). Data
order: prepare and the four sleepers run together, then the join (~0.3 s of sleep).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fanflow
from fanflow.load.pflow_md import data_order_plan, parse_pflow_md
from fanflow.load.reader import data_order_override

SLEEP = 0.3
WORKFLOW = """# Fan-out report

Four independent lookups on one topic, then a join.

## Inputs

### topic

What to look up.

- type: string
- default: pflow

## Steps

### prepare

Normalise the topic.

- type: shell
- command: printf '%s' '${topic}' | tr a-z A-Z
"""
for name in ("docs", "issues", "code", "pages"):
    WORKFLOW += f"""
### {name}

Look the topic up in {name} (a stand-in: sleeps {SLEEP} s).

- type: shell
- command: sleep {SLEEP}; echo '{name}:${{topic}}'
"""
WORKFLOW += """
### join

Combine the four lookups.

- type: shell
- command: echo '${prepare.stdout} ${docs.stdout} ${issues.stdout} ${code.stdout} ${pages.stdout}'

## Outputs

### report

The joined lookups.

- source: ${join.stdout}
"""


def _run(path: Path, data_order: bool) -> tuple[float, object]:
    with data_order_override(data_order):
        start = time.perf_counter()
        result = fanflow.run(path, {}, store=None, checkpoint=False)
        elapsed = time.perf_counter() - start
    if result.status != "success":
        sys.exit(f"run failed ({'data' if data_order else 'document'} order): {result.error}")
    return elapsed, result.outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    try:
        import fanflow.load.pflow_ir  # noqa: F401
    except ImportError:
        sys.exit("needs fanflow.load.pflow_ir (issue 13 part 2) to run .pflow.md files")
    plan = data_order_plan(parse_pflow_md(WORKFLOW).ir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fanout.pflow.md"
        path.write_text(WORKFLOW)
        seq, par = [], []
        outputs = set()
        for _ in range(args.runs):  # interleaved, so machine drift hits both alike
            t, out = _run(path, False)
            seq.append(t)
            outputs.add(repr(out))
            t, out = _run(path, True)
            par.append(t)
            outputs.add(repr(out))
    s, p = statistics.median(seq), statistics.median(par)
    ideal_seq = 4 * SLEEP
    ideal_par = SLEEP
    print(f"steps {plan['steps']}, critical path {' -> '.join(plan['critical_path'])}")
    print(f"document order: {s:.3f} s   (sleep alone {ideal_seq:.1f} s)")
    print(f"data order:     {p:.3f} s   (sleep alone {ideal_par:.1f} s)")
    print(
        f"speedup {s / p:.2f}x; ideal from sleeps {ideal_seq / ideal_par:.2f}x, "
        f"from step counts {plan['speedup']:.2f}x; same outputs: {len(outputs) == 1}"
    )


if __name__ == "__main__":
    main()
