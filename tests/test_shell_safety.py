"""A value substituted into a shell command is data in every shell context (issue 12).

Hostile values go through the real CLI; a marker file proves that nothing they hold ran. Each
CLI test runs every context at once (one batch node per context over all hostile values).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli, wf
from fanflow import templates
from fanflow.errors import NodeError
from fanflow.nodes import shell_syntax

HOSTILE = [
    "a[$(touch {d}/pwned1)]",
    "'; touch {d}/pwned2; '",
    '"; touch {d}/pwned3; "',
    "*",
    "$(touch {d}/pwned4)",
    "`touch {d}/pwned5`",
    "line1\nline2 $(touch {d}/pwned6)",
    "&",
    "back\\slash\\",
    "-n",
    "a  b\tc",
    "${{HOME}} $HOME }} {{",
]

# context → (command, what it prints for the value v)
CONTEXTS = {
    "bare": ("printf '%s' ${item}", "{v}"),
    "double_quotes": ("printf '%s' \"<${item}>\"", "<{v}>"),
    "single_quotes": ("printf '%s' '<${item}>'", "<{v}>"),
    "ansi_c_quotes": ("printf '%s' $'<${item}>'", "<{v}>"),
    "command_substitution_in_quotes": ("printf '%s' \"$(printf '%s' ${item})\"", "{v}"),
    "backticks_in_quotes": ("printf '%s' \"`printf '%s' ${item}`\"", "{v}"),
    "process_substitution": ("cat <(printf '%s' ${item})", "{v}"),
    "default_value": ("printf '%s' $${UNSET_VAR:-${item}}", "{v}"),
    "default_value_in_quotes": ("printf '%s' \"$${UNSET_VAR:-${item}}\"", "{v}"),
    "prefix_pattern_is_literal": ('w="${item}tail"; printf \'%s\' "$${w#${item}}"', "tail"),
    "replacement_is_literal": ("w=ab; printf '%s' \"$${w/b/${item}}\"", "a{v}"),
    "case_pattern_is_literal": ("case lit in ${item}) printf match;; *) printf no;; esac", "no"),
    "test_pattern_is_literal": ("[[ lit == ${item} ]] && printf match || printf no", "no"),
    "assignment": ("A=${item}; printf '%s' \"$A\"", "{v}"),
    "heredoc": ("cat <<EOF\n<${item}> \"q\" 'q'\nEOF", "<{v}> \"q\" 'q'"),
    "heredoc_tabs": ("cat <<-EOF\n\t<${item}>\n\tEOF", "<{v}>"),
    "here_string": ("cat <<< ${item}", "{v}"),
    "after_comment_with_apostrophe": ("# don't stop reading\nprintf '%s' ${item}", "{v}"),
    "inside_comment": ("printf ok # it's ${item} $(touch x)", "ok"),
    "shell_loop_escape": (
        "LIST=\"a b\"; for f in $${LIST}; do printf '[%s]' \"$f\"; done; printf '%s' ${item}",
        "[a][b]{v}",
    ),
    "argument_of_bash_c": ('bash -c \'printf "%s" "$1"\' _ ${item}', "{v}"),
    "inside_case_in_substitution": (
        "x=$(case a in a) printf '%s' ${item};; esac); printf '%s' \"$x\"",
        "{v}",
    ),
}


def _batch_node(node_id: str, command: str, **params) -> dict:
    return {"id": node_id, "type": "shell", "params": {"command": command, **params},
            "batch": {"items": "${values}", "error_handling": "continue", "parallel": True}}  # fmt: skip


def _run(write_wf, tmp_path: Path, nodes: list[dict], values: list[str]):
    doc = wf(nodes, [], inputs={"values": {"type": "array"}},
             outputs={n["id"]: {"source": f"${{{n['id']}}}"} for n in nodes})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), f"values={json.dumps(values)}",
                  "--output-format", "json", cwd=tmp_path)  # fmt: skip
    assert not list(tmp_path.glob("pwned*")), "a value was executed"
    return res


def test_hostile_values_are_data_in_every_context(write_wf, tmp_path):
    (tmp_path / "some_file").write_text("x")  # what `*` would expand to
    values = [v.format(d=tmp_path) for v in HOSTILE]
    nodes = [_batch_node(name, cmd) for name, (cmd, _) in CONTEXTS.items()]
    nodes.append(_batch_node("env_param", "printf '%s' \"$V\"", env={"V": "${item}"}))
    nodes.append(_batch_node("stdin_param", "cat", stdin="${item}"))
    res = _run(write_wf, tmp_path, nodes, values)
    assert res.code == 0, res.stderr
    outputs = res.json["outputs"]
    for name, (_, shape) in [*CONTEXTS.items(), ("env_param", ("", "{v}")),
                             ("stdin_param", ("", "{v}"))]:  # fmt: skip
        batch = outputs[name]
        assert batch["errors"] == [], (name, batch["errors"])
        got = [r["stdout"] for r in batch["results"]]
        assert got == [shape.format(v=v) for v in values], name
    assert not (tmp_path / "x").exists()


def test_arithmetic_contexts_compute_with_plain_integers(write_wf):
    commands = {
        "expansion": "echo $(( ${n} + 1 ))",
        "command": "(( ${n} > 40 )) && echo yes",
        "comparison": "[[ ${n} -gt 40 ]] && echo yes",
        "let": "let m=${n}+1; echo $m",
        "for_loop": "for (( i=${n}; i<43; i++ )); do printf $i; done",
        "subscript": "a=(x y z); echo $${a[${i}]}",
        "assign_subscript": "a[${i}]=z; echo $${a[2]}",
        "offset": "s=abcdef; echo $${s:${i}:2}",
        "declare_i": "declare -i m=${n}+1; echo $m",
        "old_style": "echo $[${n}+1]",
        "quoted_inside": 'echo $(( "${n}" * 2 ))',
    }
    doc = wf([{"id": k, "type": "shell", "params": {"command": c}} for k, c in commands.items()],
             [], inputs={"n": {"type": "string"}, "i": {"type": "integer"}},
             outputs={k: {"source": f"${{{k}.stdout}}"} for k in commands})  # fmt: skip
    # 041 is the decimal 41 the author wrote: bash alone would read it as octal 33.
    res = run_cli("run", str(write_wf(doc)), "n=041", "i=2", "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"] == {
        "expansion": "42", "command": "yes", "comparison": "yes", "let": "42",
        "for_loop": "4142", "subscript": "z", "assign_subscript": "z", "offset": "cd",
        "declare_i": "42", "old_style": "42", "quoted_inside": "82",
    }  # fmt: skip


def test_arithmetic_refuses_a_value_that_is_not_a_plain_integer(write_wf, tmp_path):
    commands = {
        "expansion": "echo $(( ${item} + 1 ))",
        "command": "(( ${item} >= 1 ))",
        "comparison": "[[ ${item} -eq 1 ]]",
        "comparison_left": "[[ 1 -le ${item} ]]",
        "let": "let m=${item}",
        "for_loop": "for (( i=0; i<${item}; i++ )); do :; done",
        "subscript": "a=(1); echo $${a[${item}]}",
        "offset": "s=abc; echo $${s:${item}}",
        "declare_i": "declare -i m=${item}",
        "integer_variable": "declare -i m; m=${item}",
    }
    values = ["1", f"a[$(touch {tmp_path}/pwned1)]", "1+1", "x", "1.5", "", "2 3"]
    res = _run(write_wf, tmp_path, [_batch_node(k, c) for k, c in commands.items()], values)
    assert res.code == 0, res.stderr
    for name in commands:
        errors = res.json["outputs"][name]["errors"]
        assert [e["index"] for e in errors] == list(range(1, len(values))), name
        assert all("${item}" in e["error"] and "not a plain integer" in e["error"] for e in errors)


def test_arithmetic_refusal_fails_the_run_naming_the_node(write_wf, tmp_path):
    doc = wf([{"id": "count", "type": "shell", "params": {"command": "echo $(( ${n} + 1 ))"}}],
             inputs={"n": {"type": "string"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), f"n=a[$(touch {tmp_path}/pwned)]")
    assert res.code == 1
    assert "count" in res.stderr and "not a plain integer" in res.stderr
    assert "env" in res.stderr  # says how to pass the value instead
    assert not list(tmp_path.glob("pwned*"))


def test_variable_name_contexts_take_only_plain_names(write_wf, tmp_path):
    commands = {
        "read": "read -r ${item} <<< hi; echo $FOO",
        "read_with_prompt": "read -r -p '' ${item} <<< hi && echo $FOO",
        "printf_v": "printf -v ${item} %s hi; echo $FOO",
        "test_v": "FOO=1; [[ -v ${item} ]] && echo set",
        "unset": 'FOO=1; unset ${item}; echo "[$${FOO-}]"',
        "declare_name": "declare ${item}=hi; echo $FOO",
    }
    values = ["FOO", f"a[$(touch {tmp_path}/pwned1)]", "FOO[0]"]
    res = _run(write_wf, tmp_path, [_batch_node(k, c) for k, c in commands.items()], values)
    assert res.code == 0, res.stderr
    for name in commands:
        batch = res.json["outputs"][name]
        assert [e["index"] for e in batch["errors"]] == [1, 2], name
        assert all("not a plain variable name" in e["error"] for e in batch["errors"])
        assert batch["results"][0]["stdout"] in ("hi", "set", "[]"), name


def test_positions_with_no_safe_reference_are_refused_at_validation(write_wf):
    commands = {
        "quoted_heredoc": "cat <<'EOF'\nHello ${name}\nEOF",
        "double_quoted_heredoc": 'cat <<"EOF"\n${name}\nEOF',
        "second_heredoc_quoted": "cat <<A; cat <<'B'\nok ${name}\nA\n${name}\nB",
        "eval": 'eval "echo ${name}"',
        "bash_c_script": 'bash -c "echo ${name}"',
        "script_behind_wrapper": "timeout 5 sh -c 'echo ${name}'",
        "prompt_variable": "PS4=${name}; set -x; :",
        "trap": "trap 'echo ${name}' EXIT",
        "declare_array": "declare -a arr=${name}",
        "after_backslash": "echo \\${name}",
        "not_understood": "shopt -s extglob; echo @(a|b) ${name}",
    }
    doc = wf([{"id": k, "type": "shell", "params": {"command": c}} for k, c in commands.items()],
             [], inputs={"name": {"type": "string", "default": "x"}})  # fmt: skip
    path = write_wf(doc)
    res = run_cli("validate", str(path))
    assert res.code == 2, res.stderr
    for node_id in commands:
        line = next((ln for ln in res.stderr.splitlines() if f"'{node_id}'" in ln or
                     f"{node_id}:" in ln or f"node {node_id}" in ln), None)  # fmt: skip
        assert line is not None, (node_id, res.stderr)
    assert "params.command" in res.stderr
    assert "quoted here-document" in res.stderr and "stdin" in res.stderr
    assert "unquoted here-document (<<EOF)" in res.stderr
    # The same through `run`, with the JSON contract: nothing ran.
    res = run_cli("run", str(path), "--output-format", "json")
    assert res.code == 2
    assert res.json["status"] == "invalid" and "quoted here-document" in json.dumps(res.json)


def test_values_over_the_kernel_argument_limit_arrive_exactly(write_wf, tmp_path):
    unit = "é€ line with 'quotes' \"and\" $(touch pwned) \\ tab\t\n"
    big = (unit * (210_000 // len(unit.encode()) + 1)).rstrip("\n") + " end"
    assert len(big.encode()) > 200 * 1024
    (tmp_path / "big.txt").write_text(big)
    digest = hashlib.sha256(big.encode()).hexdigest()
    twice = hashlib.sha256((big + big).encode()).hexdigest()
    literal = "x" * 200_000
    nodes = [
        {"id": "src", "type": "read-file", "params": {"file_path": str(tmp_path / "big.txt")}},
        {"id": "word", "type": "shell", "params": {"command": "printf '%s' ${src.content} | sha256sum"}},
        {"id": "quoted", "type": "shell",
         "params": {"command": 'printf \'%s\' "${src.content}${src.content}" | sha256sum'}},
        {"id": "heredoc", "type": "shell",
         "params": {"command": "cat <<EOF | head -c -1 | sha256sum\n${src.content}\nEOF"}},
        {"id": "env", "type": "shell",
         "params": {"command": "printf '%s' \"$BIG\" | sha256sum", "env": {"BIG": "${src.content}"}}},
        {"id": "stdin", "type": "shell", "params": {"command": "sha256sum", "stdin": "${src.content}"}},
        {"id": "huge_command", "type": "shell",
         "params": {"command": f"printf '%s' '{literal}' | wc -c; cat", "stdin": "after"}},
    ]  # fmt: skip
    outputs = {n["id"]: {"source": f"${{{n['id']}.stdout}}"} for n in nodes[1:]}
    res = run_cli("run", str(write_wf(wf(nodes, [], outputs=outputs))), "--output-format", "json",
                  cwd=tmp_path)  # fmt: skip
    assert res.code == 0, res.stderr
    out = {k: v.split()[0] if k != "huge_command" else v for k, v in res.json["outputs"].items()}
    assert out == {"word": digest, "quoted": twice, "heredoc": digest, "env": digest,
                   "stdin": digest, "huge_command": "200000\nafter"}  # fmt: skip
    assert not (tmp_path / "pwned").exists()


def test_unusable_values_and_cwd_fail_with_a_clear_message(write_wf, tmp_path):
    nodes = [
        {"id": "nul", "type": "shell", "params": {"command": "printf '%s' ${item}"},
         "batch": {"items": ["ok", "a\u0000b"], "error_handling": "continue"}},
        {"id": "nowhere", "type": "shell",
         "params": {"command": "pwd", "cwd": str(tmp_path / "missing")}},
    ]  # fmt: skip
    doc = wf(nodes, [("nul", "nowhere")], outputs={"nul": {"source": "${nul.errors}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1
    body = json.dumps(res.json)
    assert "${item}" in body and "NUL character" in body
    assert "cwd" in body and "missing" in body and "not a directory" in body


# --- the reader, context by context (no CLI: bash runs the rendered command directly) ----------


def _render(command: str, **values: str) -> tuple[str, dict[str, str]]:
    compiled = templates.parse(command)
    return shell_syntax.render_command(compiled, values, "FANFLOW_VALUE_")


def _bash(command: str, **values: str) -> str:
    text, env = _render(command, **values)
    d = shell_syntax.deliver(text, env, None)
    proc = subprocess.run(["bash", "-c", d.command], env=d.env, input=d.stdin,
                          capture_output=True, check=True)  # fmt: skip
    return proc.stdout.decode()


@pytest.mark.parametrize(
    ("command", "forms"),
    [
        ("echo ${x}", ["word"]),
        ('echo "a ${x}" $"b ${x}"', ["dq", "dq"]),
        ("echo 'a ${x}' $'b ${x}'", ["sq", "ansi"]),
        ('echo "$(echo ${x})" "`echo ${x}`"', ["word", "word"]),
        ("cat <<EOF\n${x}\nEOF\necho ${x}", ["dq", "word"]),
        ("cat <<EOF | grep a\n$(echo ${x})\nEOF", ["word"]),
        ("# it's ${x}\necho ${x} # ${x}", ["drop", "word", "drop"]),
        ('echo $${v:-${x}} "$${v:-${x}}" "$${v#${x}}"', ["word", "dq", "word"]),
        ("echo $(( ${x} )) $${a[${x}]} $${s:${x}:${x}}", ["arith"] * 4),
        ("x=$(case a in a) echo ${x};; (b) echo ${x};; esac)", ["word", "word"]),
        ("if [[ -n ${x} && ${x} -gt 1 ]]; then :; fi", ["word", "word"]),
        ("f() { local v=${x}; }; f", ["word"]),
    ],
)
def test_each_position_gets_the_reference_for_its_context(command, forms):
    slots = shell_syntax.analyze(shell_syntax._segments(templates.parse(command)))
    assert [s.form for s in slots] == forms
    assert not any(s.refusal for s in slots)


@pytest.mark.parametrize(
    ("command", "checks"),
    [
        ("[[ ${x} -ge ${y} ]] && [[ ${x} == ${y} ]]", ["integer", "integer", None, None]),
        ("read -r -p ${x} -a ${y} ${x}", [None, "name", "name"]),
        ("mapfile -t -d ${x} ${y}", [None, "name"]),
        ("printf -v ${x} '%s' ${y}", ["name", None]),
        ("declare -n r=${x}; export A=${y}", ["name", None]),
        ("echo $(( $(echo ${x}) ))", [None]),
    ],
)
def test_positions_where_bash_reads_names_or_numbers_are_checked(command, checks):
    slots = shell_syntax.analyze(shell_syntax._segments(templates.parse(command)))
    assert [s.check for s in slots] == checks


def test_values_reach_bash_exactly_in_nested_contexts():
    v = "a'b\"c $(touch pwned) `x` \\ * \n end"
    assert _bash('printf "%s" "$(printf "%s" "$(printf "%s" ${v})")"', v=v) == v
    assert _bash("printf '%s' $${u:-$${w:-${v}}}", v=v) == v
    assert _bash("cat <<A; cat <<B\n${v}\nA\n${v}\nB", v=v) == v + "\n" + v + "\n"
    assert _bash("echo $(( ${n} * 2 ))", n=" -7 ") == "-14\n"


def test_a_refused_position_is_refused_at_run_time_too():
    with pytest.raises(NodeError, match="quoted here-document"):
        _render("cat <<'EOF'\n${x}\nEOF", x="v")
    with pytest.raises(NodeError, match="not a plain integer"):
        _render("echo $(( ${x} ))", x="1+1")
