"""`fanflow plan`: static schedule of a diamond, an if/else, a loop, and the warnings."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from conftest import run_cli
from fanflow.commands.plan import plan as plan_cmd
from fanflow.compile.compiled import compile_workflow
from fanflow.compile.graph import build_graph
from fanflow.load.reader import parse_source
from fanflow.observe.plan import build_plan, format_plan_json, format_plan_mermaid, format_plan_text


def sh(node_id: str, command: str = "true", **extra) -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": command}, **extra}


def edges(*pairs) -> list[dict]:
    out = []
    for p in pairs:
        a, b, *action = p
        out.append({"from": a, "to": b, **({"action": action[0]} if action else {})})
    return out


def wf(nodes, edge_list=()) -> dict:
    return {"ir_version": "0.1.0", "nodes": nodes, "edges": list(edge_list)}


DIAMOND = wf(
    [sh("a"), sh("b"), sh("c"), sh("d", "echo ${b.stdout} ${c.stdout}")],
    edges(("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")),
)
IF_ELSE = wf(
    [
        {"id": "check", "type": "code", "params": {"code": "result = 1\nnext = 'yes'"}},
        sh("yes"),
        sh("no"),
        sh("after"),
    ],
    edges(("check", "yes", "yes"), ("check", "no", "no"), ("yes", "after"), ("no", "after")),
)
LOOP = wf(
    [
        sh("topic"),
        sh("draft", "echo ${topic.stdout}"),
        {"id": "review", "type": "code", "params": {"code": "result = 1"}},
        sh("publish", "echo ${draft.stdout}"),
    ],
    edges(
        ("topic", "draft"),
        ("draft", "review"),
        ("review", "draft", "revise"),
        ("review", "publish"),
    ),
)


def plan_of(doc: dict) -> dict:
    return build_plan(compile_workflow(doc))


def test_diamond_levels_fan_out_and_join():
    p = plan_of(DIAMOND)
    assert p["levels"] == [["a"], ["b", "c"], ["d"]]
    assert p["max_parallel"] == 2
    assert p["fan_outs"] == [{"node": "a", "action": "default", "to": ["b", "c"]}]
    assert p["joins"] == [{"node": "d", "waits_for": ["b", "c"], "kind": "all"}]
    assert p["branches"] == [] and p["loops"] == [] and p["warnings"] == []
    text = format_plan_text(p)
    assert "2 nodes in parallel" in text.splitlines()[0]
    assert "  2  b   c" in text
    assert "a -> b, c" in text and "d <- b, c" in text
    json.dumps(p)


def test_if_else_is_a_branch_and_an_or_join_not_a_fan_out():
    p = plan_of(IF_ELSE)
    assert p["levels"] == [["check"], ["yes", "no"], ["after"]]
    assert p["branches"] == [{"node": "check", "actions": {"yes": ["yes"], "no": ["no"]}}]
    assert p["fan_outs"] == []  # alternatives, not parallel work
    assert p["joins"] == [{"node": "after", "waits_for": ["yes", "no"], "kind": "any"}]
    text = format_plan_text(p)
    assert "check: yes -> yes; no -> no" in text
    assert "after <- yes | no  (or-join" in text
    mermaid = format_plan_mermaid(p)
    assert 'n0 -->|"yes"| n1' in mermaid and 'n0 -->|"no"| n2' in mermaid


def test_loop_is_one_sequential_unit():
    p = plan_of(LOOP)
    assert p["levels"] == [["topic"], ["draft", "review"], ["publish"]]
    assert p["max_parallel"] == 1  # the loop's nodes take turns
    (loop,) = p["loops"]
    assert loop["nodes"] == ["draft", "review"] and loop["entry"] == "draft"
    assert loop["back_edges"] == [{"from": "review", "to": "draft", "action": "revise"}]
    assert {"from": "review", "to": "publish", "action": "default"} in loop["exits"]
    assert p["fan_outs"] == []
    text = format_plan_text(p)
    assert "  2  [loop 1: draft -> review]" in text
    assert "loop 1: draft -> review -> draft (entry draft, max 100 visits" in text
    mermaid = format_plan_mermaid(p)
    assert 'subgraph loop1["loop 1"]' in mermaid and 'n2 -->|"revise"| n1' in mermaid


def test_missing_edge_warning_and_dotted_read():
    doc = wf([sh("a"), sh("b"), sh("c", "echo ${b.stdout}")], edges(("a", "b"), ("a", "c")))
    p = plan_of(doc)
    assert p["levels"] == [["a"], ["b"], ["c"]]  # c waits for b: what it reads
    assert p["fan_outs"] == []  # c does not start with b
    assert p["missing_edges"] == [{"node": "c", "reads": "b"}]
    assert any("'c' reads 'b' but has no edge from 'b'" in w for w in p["warnings"])
    assert 'n1 -.->|"reads, no edge"| n2' in format_plan_mermaid(p)


def test_implicit_chain_and_sequential_batch_warnings():
    doc = wf(
        [sh("a"), sh("b", "echo ${item}", batch={"items": [1, 2, 3]})],
    )
    p = plan_of(doc)
    assert p["implicit_chain"] and p["levels"] == [["a"], ["b"]]
    assert any(w.startswith("no edges: nodes run one after another") for w in p["warnings"])
    assert any("batch 'b' runs its items one at a time" in w for w in p["warnings"])
    assert p["nodes"][1]["batch"]["items"] == 3
    assert "b (batch: 3 items, one at a time)" in format_plan_text(p)
    assert "n1[[" in format_plan_mermaid(p)  # batch node shape


def test_mermaid_escapes_and_uses_safe_ids():
    # A code node: its `next` may be any action (a shell node emits only default and error).
    end = {"id": "end", "type": "code", "params": {"code": "next = 'say \"hi\"'"}}
    doc = wf([end, sh("x-y")], edges(("end", "x-y", 'say "hi"')))
    mermaid = format_plan_mermaid(plan_of(doc))
    lines = [ln.strip() for ln in mermaid.splitlines()]
    assert lines[0] == "flowchart TD"
    assert 'n0["end<br/><small>code</small>"]' in lines
    assert 'n0 -->|"say #quot;hi#quot;"| n1' in lines


def test_plan_command(tmp_path: Path):
    (tmp_path / "d.json").write_text(json.dumps(DIAMOND))
    runner = CliRunner()
    res = runner.invoke(plan_cmd, [str(tmp_path / "d.json")])
    assert res.exit_code == 0 and "levels" in res.output
    res = runner.invoke(plan_cmd, [str(tmp_path / "d.json"), "--format", "json"])
    assert res.exit_code == 0 and json.loads(res.output)["levels"][1] == ["b", "c"]
    res = runner.invoke(plan_cmd, [str(tmp_path / "d.json"), "--format", "mermaid"])
    assert res.exit_code == 0 and res.output.startswith("flowchart TD\n")
    bad = wf([sh("a")], edges(("a", "ghost")))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    res = runner.invoke(plan_cmd, [str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "ghost" in res.output
    res = runner.invoke(plan_cmd, [str(tmp_path / "bad.json"), "--format", "json"])
    assert res.exit_code == 2
    assert json.loads(res.output.splitlines()[0])["status"] == "invalid"


def code(node_id: str, **inputs: str) -> dict:
    params: dict = {"code": "result = 1"}
    if inputs:
        params["inputs"] = inputs
    return {"id": node_id, "type": "code", "params": params}


def wide(k: int) -> dict:
    """start → b0..b{k-1} → join, the join reading every branch (issue 11's shape)."""
    bs = [f"b{i}" for i in range(k)]
    nodes = [code("start"), *(code(b) for b in bs)]
    nodes.append(code("join", **{f"v{i}": f"${{{b}.result}}" for i, b in enumerate(bs)}))
    return wf(nodes, edges(*(("start", b) for b in bs), *((b, "join") for b in bs)))


def test_wide_fan_out_and_fan_in():
    k = 1000
    bs = [f"b{i}" for i in range(k)]
    p = plan_of(wide(k))
    assert p["levels"] == [["start"], bs, ["join"]]
    assert p["max_parallel"] == k
    assert p["fan_outs"] == [{"node": "start", "action": "default", "to": bs}]
    assert p["joins"] == [{"node": "join", "waits_for": bs, "kind": "all"}]
    assert p["missing_edges"] == [] and p["warnings"] == [] and p["branches"] == []
    text = format_plan_text(p)
    assert text.splitlines()[0].endswith(
        f"{k + 2} nodes, {2 * k} edges, 3 levels, up to {k} nodes in parallel"
    )
    assert "  2  " + "   ".join(bs) in text
    assert f"start -> {', '.join(bs)}" in text and f"join <- {', '.join(bs)}" in text
    mermaid = format_plan_mermaid(p).splitlines()
    assert len(mermaid) == 1 + (k + 2) + 2 * k  # header, nodes, edges
    assert mermaid[-1] == f"    n{k} --> n{k + 1}"  # the last branch into the join
    assert format_plan_json(p) == json.dumps(p, indent=2, default=str)


def test_wide_fan_out_drops_targets_that_wait_for_each_other():
    # the odd branches read the even one before them: only the even ones start with `start`
    doc = wide(400)
    for i in range(1, 400, 2):
        doc["nodes"][1 + i]["params"]["inputs"] = {"prev": f"${{b{i - 1}.result}}"}
    p = plan_of(doc)
    evens, odds = [f"b{i}" for i in range(0, 400, 2)], [f"b{i}" for i in range(1, 400, 2)]
    assert p["levels"] == [["start"], evens, odds, ["join"]]
    assert p["fan_outs"][0] == {"node": "start", "action": "default", "to": evens}
    assert len(p["missing_edges"]) == 200
    assert {"node": "b1", "reads": "b0"} in p["missing_edges"]


def test_wide_or_join_after_a_many_way_branch():
    k = 300
    arms = [f"arm{i}" for i in range(k)]
    doc = wf(
        [{"id": "pick", "type": "code", "params": {"code": "result = 1\nnext = 'a0'"}},
         *(code(a) for a in arms), code("after")],
        edges(*(("pick", a, f"a{i}") for i, a in enumerate(arms)), *((a, "after") for a in arms)),
    )  # fmt: skip
    p = plan_of(doc)
    assert p["joins"] == [{"node": "after", "waits_for": arms, "kind": "any"}]
    assert p["fan_outs"] == []  # one arm per action: alternatives
    assert len(p["branches"][0]["actions"]) == k


def test_plan_json_matches_the_standard_encoder():
    for doc in (DIAMOND, IF_ELSE, LOOP):
        p = plan_of(doc)
        assert format_plan_json(p) == json.dumps(p, indent=2, default=str)
    odd = {"a": {1: [1.5, None, True, ("t",)], "b": {}}, "c": [], "é": 'ü\n"', "d": [[], {}]}
    assert format_plan_json(odd) == json.dumps(odd, indent=2, default=str)


# -- missing edges: a read is covered when its source reaches the reader over edges -------------


def test_missing_edges_through_a_chain_a_loop_and_not_at_all(tmp_path: Path):
    doc = wf(
        [
            sh("a"),
            sh("b"),
            sh("c"),
            sh("d", "echo ${a.stdout}"),  # a → b → c → d: covered by the chain
            sh("draft", "echo ${review.result} ${check.stdout}"),  # over the loop: covered
            sh("check", "echo ${c.stdout}"),  # c → d → draft → check: covered
            {"id": "review", "type": "code", "params": {"code": "result = 1"}},
            sh("publish", "echo ${check.stdout} ${a.stdout}"),  # out of the loop: covered
            sh("side"),  # no edge at all
            sh("late", "echo ${side.stdout} ${publish.stdout} ${a.stdout}"),
        ],
        edges(
            ("a", "b"), ("b", "c"), ("c", "d"), ("d", "draft"), ("draft", "check"),
            ("check", "review"), ("review", "draft", "revise"), ("review", "publish"),
            ("b", "late"),  # covers a
        ),
    )  # fmt: skip
    p = plan_of(doc)
    assert p["missing_edges"] == [
        {"node": "late", "reads": "publish"},  # sources sorted by id within a reader
        {"node": "late", "reads": "side"},
    ]
    (path := tmp_path / "wf.json").write_text(json.dumps(doc))
    res = run_cli("validate", str(path))
    assert res.code == 0, res.stderr
    warned = [ln for ln in (res.stdout + res.stderr).splitlines() if "has no edge from" in ln]
    assert len(warned) == 2
    assert "'late' reads 'publish'" in warned[0] and "'late' reads 'side'" in warned[1]


def test_missing_edges_inside_a_loop_follow_the_loops_own_edges():
    # x ⇄ y is the loop's edge cycle; z joins the component only through reads, so no edge
    # reaches z from y, nor x from z; x reads y over the back edge (covered)
    doc = wf(
        [sh("x", "echo ${z.stdout} ${y.stdout}"), sh("y"), sh("z", "echo ${y.stdout}")],
        edges(("x", "y"), ("y", "x", "retry")),
    )
    graph = build_graph(parse_source(doc))
    assert graph.missing_edges() == [("x", "z"), ("z", "y")]


def _reference_missing_edges(graph) -> list[tuple[str, str]]:
    """The obvious definition: a backwards search over edges from every reader."""
    found = []
    for node in graph.ids:
        seen: set[str] = set()
        stack = [node]
        while stack:
            for e in graph.in_edges[stack.pop()]:
                if e.src not in seen:
                    seen.add(e.src)
                    stack.append(e.src)
        found += [(node, s) for s in sorted(graph.reads[node]) if s not in seen]
    return found


def test_missing_edges_match_a_search_from_every_reader_on_random_graphs():
    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(2, 14)
        ids = [f"n{i}" for i in range(n)]
        pairs = []
        for _ in range(rng.randint(1, 2 * n)):
            a, b = rng.sample(range(n), 2)
            if a < b or rng.random() < 0.3:  # mostly forwards, some back edges (loops)
                pairs.append((ids[a], ids[b], "default" if a < b else "again"))
        nodes = []
        for i, node_id in enumerate(ids):
            reads = rng.sample(ids[:i] + ids[i + 1 :], rng.randint(0, min(3, n - 1)))
            nodes.append(sh(node_id, " ".join(f"${{{r}.stdout}}" for r in reads) or "true"))
        graph = build_graph(parse_source(wf(nodes, edges(*pairs) or edges((ids[0], ids[1])))))
        assert graph.missing_edges() == _reference_missing_edges(graph)


def test_missing_edges_on_a_long_chain_of_loose_reads():
    # every node reads the one two back, with edges only between neighbours: all covered, and
    # one node off the chain read by the last one is not (the shape that was quadratic)
    k = 3000
    nodes = [code("n0"), code("n1")] + [
        code(f"n{i}", p=f"${{n{i - 2}.result}}") for i in range(2, k)
    ]
    nodes.append(code("off"))
    nodes[k - 1]["params"]["inputs"]["o"] = "${off.result}"
    doc = wf(nodes, edges(*((f"n{i - 1}", f"n{i}") for i in range(1, k))))
    assert build_graph(parse_source(doc)).missing_edges() == [(f"n{k - 1}", "off")]


def test_plan_names_the_mcp_server_and_tool_a_node_calls(write_wf):
    path = write_wf(
        {
            "ir_version": "0.1.0",
            "mcp_servers": {"files": {"command": "true"}},
            "nodes": [{"id": "ls", "type": "mcp", "params": {"server": "files", "tool": "list"}}],
        }
    )
    r = run_cli("plan", str(path))
    assert r.code == 0, r.stderr
    assert "ls [mcp files.list]" in r.stdout
    plan = run_cli("plan", str(path), "--format", "json").json
    assert plan["nodes"][0]["detail"] == "mcp files.list"
