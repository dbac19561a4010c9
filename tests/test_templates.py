"""Templates: path steps read data only, JSON text is recognised one way, `$${` escapes on its
own, and a shell variable written as a template gets a hint that points to `$${name}`."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, wf
from fanflow import templates
from fanflow.compile.compiled import compile_workflow
from fanflow.errors import NodeError, WorkflowInvalid
from fanflow.execute.batch import coerce_items
from fanflow.templates import MissingValue, TemplateSyntaxError


def shell(node_id: str, command: str, **extra: object) -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": command}, **extra}


def render(text: str, scope: dict) -> object:
    return templates.render(templates.parse(text), scope)


def missing(text: str, scope: dict) -> str:
    with pytest.raises(MissingValue) as exc:
        render(text, scope)
    return str(exc.value)


# --- path steps read dict keys, list indexes and JSON text, nothing else ----------------------


def test_a_key_step_on_plain_text_has_no_value_through_the_cli(write_wf):
    doc = wf([shell("a", "echo hello"), shell("b", "echo ${a.stdout.title}")], [("a", "b")])
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1, res.stdout
    assert res.json["failed_node"] == "b"
    assert "no value at 'title'" in res.json["error"]
    assert "a.stdout is text, not JSON" in res.json["error"]
    assert "built-in" not in res.stdout


def test_attribute_access_reaches_nothing_through_the_cli(write_wf):
    doc = wf([shell("a", "echo ${x.__class__}")], inputs={"x": {"type": "string"}})
    res = run_cli("run", str(write_wf(doc)), "x=1", "--output-format", "json")
    assert res.code == 1, res.stdout
    assert "no value at '__class__'" in res.json["error"]


class _Obj:
    title = "an attribute"

    def upper(self) -> str:
        return "called"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("${a.title}", "plain text"),
        ("${a.upper}", "plain text"),
        ("${a.__class__}", "plain text"),
        ("${a.__class__}", {"k": 1}),
        ("${a.keys}", {"k": 1}),
        ("${a.title}", _Obj()),
        ("${a.upper}", _Obj()),
        ("${a.__dict__}", _Obj()),
        ("${a.real}", 3),
        ("${a[0]}", "text is not a list of characters"),
        ("${a.x}", [1, 2]),
        ("${a.append}", [1, 2]),
        ("${a.x}", None),
        ("${a[0]}", b"bytes"),
    ],
)
def test_only_keys_and_indexes_are_reachable(text, value):
    assert "no value at" in missing(text, {"a": value})


def test_steps_reach_keys_indexes_and_json_text():
    scope = {"a": {"d": {"k": [10, {"n": "deep"}]}, "t": '{"items": [1, 2, 3]}', "tup": (4, 5)}}
    assert render("${a.d.k[1].n}", scope) == "deep"
    assert render("${a.t.items[2]}", scope) == 3
    assert render("${a.tup[1]}", scope) == 5
    assert render("${a}", scope) is scope["a"]  # a bare name is the whole namespace


def test_missing_values_say_why():
    scope = {"a": {"r": {"alpha": 1, "beta": 2}, "l": [1, 2, 3], "bad": '{"x": 1,}', "n": 5}}
    assert "keys: alpha, beta" in missing("${a.r.gamma}", scope)
    assert "a.l has 3 items" in missing("${a.l[3]}", scope)
    assert "a.l is a list" in missing("${a.l.x}", scope)
    assert "a.bad looks like JSON but does not parse" in missing("${a.bad.x}", scope)
    assert "a.n is int" in missing("${a.n.x}", scope)
    assert missing("${a.r.gamma}", scope).startswith("${a.r.gamma}: no value at 'gamma'")


def test_negative_indexes_count_from_the_end():
    scope = {"a": {"l": [1, 2, 3], "t": "[4, 5]"}}
    assert render("${a.l[-1]}", scope) == 3
    assert render("${a.t[-2]}", scope) == 4
    assert "a.l has 3 items" in missing("${a.l[-4]}", scope)


def test_quoted_keys_reach_keys_with_dots_spaces_and_digits():
    data = {"x.y": 1, "a b": 2, "2024": 3, 'q"uote': 4, "café": 5, "with-dash": 6}
    scope = {"a": {"r": data}}
    assert render('${a.r["x.y"]}', scope) == 1
    assert render("${a.r['a b']}", scope) == 2
    assert render('${a.r["2024"]}', scope) == 3
    assert render('${a.r["q\\"uote"]}', scope) == 4
    assert render("${a.r.café}", scope) == 5
    assert render("${a.r.with-dash}", scope) == 6
    assert render('${a["r"]["x.y"]}', scope) == 1
    assert templates.parse('${a["r"].x}').refs()[0].first_key == "r"  # type: ignore[union-attr]


# --- JSON text is recognised the same way everywhere ------------------------------------------

JSON_TEXTS = [
    ('[{"title": "t1"}]', [{"title": "t1"}]),
    ('\n[{"title": "t1"}]\n', [{"title": "t1"}]),
    ('  \t{"a": [1]}\r\n', {"a": [1]}),
]
NOT_JSON_CONTAINERS = ["42", '"text"', "true", "null", "hello", "", "  ", "[1, 2", "{oops}"]


@pytest.mark.parametrize(("text", "value"), JSON_TEXTS)
def test_json_text_with_surrounding_whitespace_is_json(text, value):
    assert templates.json_text(text) == value
    if isinstance(value, list):
        assert coerce_items("n", text) == value
    step = "[0]" if isinstance(value, list) else ".a"
    expected = value[0] if isinstance(value, list) else value["a"]
    assert render("${n.t" + step + "}", {"n": {"t": text}}) == expected


def test_empty_json_list_text_is_an_empty_batch():
    assert coerce_items("n", " [] \n") == []


@pytest.mark.parametrize("text", NOT_JSON_CONTAINERS)
def test_only_lists_and_objects_count_as_json_text(text):
    if text.strip()[:1] in "[{" and text.strip():
        with pytest.raises(ValueError):
            templates.json_text(text)
    else:
        assert templates.json_text(text) is None
    with pytest.raises(NodeError, match="expected a list"):
        coerce_items("n", text)


def test_batch_over_json_text_and_steps_into_it_agree_through_the_cli(write_wf):
    plan = shell("plan", """printf '\\n[{"title": "t1"}, {"title": "t2"}]\\n'""")
    doc = wf(
        [plan,
         shell("first", "echo ${plan.stdout[0].title}"),
         shell("each", "echo ${item.title}", batch={"items": "${plan.stdout}"})],
        outputs={"first": {"source": "${first.stdout}"},
                 "last": {"source": "${plan.stdout[-1].title}"},
                 "each": {"source": "${each.results}"}},
    )  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    out = res.json["outputs"]
    assert out["first"] == "t1" and out["last"] == "t2"
    assert [r["stdout"] for r in out["each"]] == ["t1", "t2"]


def test_batch_over_broken_json_text_says_it_does_not_parse(write_wf):
    doc = wf([shell("plan", "echo '[1, 2,'"),
              shell("each", "echo ${item}", batch={"items": "${plan.stdout}"})])  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1
    assert "looks like JSON but does not parse" in res.json["error"]
    assert "line 1" in res.json["error"]


def test_big_json_text_is_decoded_once_for_many_renders():
    text = json.dumps({"items": list(range(50_000))})
    scope = {"a": {"t": text}}
    first = render("${a.t.items}", scope)
    assert render("${a.t.items}", scope) is first  # the decoded value came from the cache
    equal_text = "".join(text)  # another run's output with the same content: a new object
    assert equal_text is not text
    again = render("${a.t.items}", {"a": {"t": equal_text}})
    assert again == first and again is not first  # never shared across runs


# --- `$${` escapes on its own ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("echo $${X}", "echo ${X}"),
        ("$${X}", "${X}"),
        ("a $${ b", "a ${ b"),
        ("$${HOME:-/tmp} $${#arr[@]}", "${HOME:-/tmp} ${#arr[@]}"),
        ("$${a}$${b}", "${a}${b}"),
    ],
)
def test_escape_alone_is_a_literal(text, literal):
    assert templates.parse(text) == literal


def test_escape_next_to_templates_keeps_literal_parts():
    t = templates.parse("echo $${X} ${a.b} $${Y}")
    assert isinstance(t, templates.Template)
    assert t.parts[0] == "echo ${X} " and t.parts[2] == " ${Y}"
    assert templates.render(t, {"a": {"b": "v"}}) == "echo ${X} v ${Y}"


def test_escaped_variable_reaches_the_shell_through_the_cli(write_wf):
    alone = "X=alone; echo $${X} '$${X}'"  # the escape is the only `${` in the command
    mixed = "X=mixed; echo $${X} '$${X}' ${who}"
    doc = wf([shell("a", alone), shell("b", mixed)], inputs={"who": {"type": "string"}},
             outputs={"a": {"source": "${a.stdout}"}, "b": {"source": "${b.stdout}"}})  # fmt: skip
    path = write_wf(doc)
    assert run_cli("validate", str(path)).code == 0
    res = run_cli("run", str(path), "who=me", "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"] == {"a": "alone ${X}", "b": "mixed ${X} me"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("echo ${a", "unclosed template '${a': add the closing '}'"),
        ("echo $${X} ${a", "unclosed template"),
        ("${}", "empty template"),
        ("${HOME:-/tmp}", "write '$${HOME:-/tmp}'"),
        ("${a ?? }", "not a valid template"),
        ('${a ?? "${b}"}', "fall back to another value"),
    ],
)
def test_syntax_errors_say_how_to_fix(text, needle):
    with pytest.raises(TemplateSyntaxError) as exc:
        templates.parse(text)
    assert needle in str(exc.value)


def test_a_syntax_error_knows_where_it_is():
    with pytest.raises(TemplateSyntaxError) as exc:
        templates.compile_value({"command": "ok", "env": {"A": ["x", "${oops"]}})
    assert exc.value.path == ".env.A[1]"


def test_fallback_literals_may_hold_braces_and_question_marks():
    assert render('${a.x ?? "what?? }"}', {"a": {}}) == "what?? }"
    assert render("pre ${a.x ?? b.y ?? [1]} post", {"a": {}, "b": {}}) == "pre [1] post"


def test_bytes_and_tuples_render_as_text():
    assert render("v=${a.b}", {"a": {"b": "é".encode()}}) == "v=é"
    assert render("v=${a.b}", {"a": {"b": (1, "x")}}) == 'v=[1, "x"]'


# --- a shell variable written as a template gets a hint pointing to `$${name}` ----------------


def test_loop_variable_hint_through_the_cli(write_wf):
    doc = wf([shell("a", "for f in *.txt; do wc -l ${f}; done")])
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 2 and res.json["status"] == "invalid"
    (problem,) = res.json["problems"]
    assert problem["message"] == "template ${f} names unknown node or input 'f'"
    assert "looks like a shell variable: write $${f} (or $f)" in problem["hint"]
    assert problem["node"] == "a" and problem["field"] == "nodes[0].params.command"


def hint_for(command: str, name: str, others: tuple[str, ...] = ()) -> str:
    nodes = [shell("a", command), *(shell(o, "true") for o in others)]
    with pytest.raises(WorkflowInvalid) as exc:
        compile_workflow(wf(nodes))
    (problem,) = [p for p in exc.value.problems if f"'{name}'" in p.message]
    return problem.hint or ""


@pytest.mark.parametrize(
    "command",
    [
        "while read -r line; do echo ${line}; done < list.txt",
        "line=$(date); echo ${line}",
        "export line=1; echo ${line}",
        'echo "$line ${line}"',
        "for ((line=0; line<3; line++)); do echo ${line}; done",
        "select line in a b; do echo ${line}; done",
    ],
)
def test_shell_variable_hints(command):
    assert "looks like a shell variable: write $${line} (or $line)" in hint_for(command, "line")


def test_shell_variable_hint_beats_a_near_miss_node_name():
    hint = hint_for("for file in *; do cat ${file}; done", "file", others=("files",))
    assert "write $${file}" in hint


def test_environment_variable_hint():
    assert "write $${HOME} (or $HOME)" in hint_for("cd ${HOME}", "HOME")


def test_no_shell_hint_without_shell_usage():
    hint = hint_for("echo ${fil}", "fil", others=("file",))
    assert hint == "did you mean 'file'?"
    assert "shell" not in hint_for("echo ${thing}", "thing")


def test_every_item_step_maps_the_rest_of_the_path_over_a_list():
    from fanflow.templates import MissingValue, parse, render

    scope = {"m": {"results": [{"s": 1}, None, {"s": 3}]}, "rows": "[[1, 2], [3]]"}
    assert render(parse("${m.results[*].s}"), scope) == [1, None, 3]  # failed item stays null
    assert render(parse("${rows[*][0]}"), scope) == [1, 3]  # into JSON text too
    assert render(parse("got ${m.results[*].s}"), scope) == "got [1, null, 3]"
    assert render(parse('${m["[*]"] ?? "quoted key, not every"}'), scope) == "quoted key, not every"
    with pytest.raises(MissingValue, match=r"m\.results\[\*\] has keys: s"):
        render(parse("${m.results[*].x}"), {"m": {"results": [{"s": 1}]}})
    with pytest.raises(MissingValue, match="not a list"):
        render(parse("${m[*]}"), {"m": {"a": 1}})
    with pytest.raises(MissingValue, match="looks like JSON but does not parse"):
        render(parse("${m[*]}"), {"m": "[1,"})  # as a path step into bad JSON text says


def test_dynamic_index_steps():
    from fanflow.templates import MissingValue, parse, render

    tpl = parse("${a.results[${__index__}].x}")
    assert [r.root for r in tpl.refs()] == ["a", "__index__"]  # the inner name is read too
    scope = {"a": {"results": [{"x": 1}, {"x": 2}]}, "__index__": 1, "k": "x", "i": "0"}
    assert render(tpl, scope) == 2
    assert render(parse("${a.results[${i}][${k}]}"), scope) == 1  # text that is a number
    with pytest.raises(MissingValue, match="an index must be a whole number or a key"):
        render(parse("${a.results[${a}]}"), scope)
