"""Inputs declared `"secret": true` stay out of every file and stream fanflow writes (run store,
trace, timeline, progress, JSON and text output, `runs show`), while the nodes get the real value;
resume asks for them again (command line or FANFLOW_SECRET_<NAME>). docs/observability.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, wf
from fanflow.observe.redact import MASK, Secrets
from fanflow.validate.inputs import secret_env_var

SECRET = "s3cr3t-TOKEN-9f1c"


def leaks(folder: Path, secret: str = SECRET) -> list[str]:
    """Every file under `folder` (the run store with its WAL and side files, traces, ...) whose
    bytes hold the secret."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def doc_with_secret() -> dict:
    nodes = [
        {"id": "a", "type": "shell", "params": {"command": "echo token=${token}"}},
        # fails with the secret in its error message; an error edge handles it
        {"id": "b", "type": "shell", "params": {"command": "echo bad ${token} >&2; exit 1"}},
        {"id": "c", "type": "shell", "params": {"command": "echo handled"}},
        {"id": "d", "type": "shell", "params": {"command": 'printf \'["%s","x"]\' ${token}'}},
        {
            "id": "e",
            "type": "shell",
            "params": {"command": "echo item-${item}"},
            "batch": {"items": "${d.stdout}"},
        },
    ]
    return wf(
        nodes,
        [("a", "b"), ("b", "c", "error"), ("a", "d"), ("d", "e")],
        inputs={"token": {"type": "string", "secret": True}, "who": {"type": "string"}},
        outputs={
            "a": {"source": "${a.stdout}"},
            "items": {"source": "${e.results}"},
            "who": {"source": "${who}"},
        },
    )


def test_a_secret_reaches_the_nodes_and_no_file_or_stream(write_wf, tmp_path):
    path = write_wf(doc_with_secret())
    files = tmp_path / "out"
    files.mkdir()
    res = run_cli(
        "run",
        str(path),
        f"token={SECRET}",
        "who=ann",
        "--output-format",
        "json",
        "--trace",
        str(files / "t.json"),
        "--timeline",
        str(files / "t.html"),
        cwd=tmp_path,
    )
    assert res.code == 0, res.stderr
    assert SECRET not in res.stdout and SECRET not in res.stderr
    out = res.json["outputs"]
    assert out["a"] == f"token={MASK}" and out["who"] == "ann"  # the node had the real value
    assert [r["stdout"] for r in out["items"]] == [f"item-{MASK}", "item-x"]
    assert res.json["nodes"]["b"]["error"].endswith(f"bad {MASK}")
    assert "✗ b" in res.stderr or "FAIL b" in res.stderr  # progress ran, and showed b's error
    assert (files / "t.json").exists() and (files / "t.html").exists()
    assert leaks(tmp_path) == []  # runs.db, its WAL, side files, trace, timeline

    # `runs show` (text and JSON) shows the input as masked
    for fmt in ("text", "json"):
        shown = run_cli("runs", "show", "last", "--output-format", fmt, cwd=tmp_path)
        assert shown.code == 0 and SECRET not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["inputs"] == {"token": MASK, "who": "ann"}

    # the text output is masked too
    res = run_cli("run", str(path), f"token={SECRET}", "who=ann", cwd=tmp_path)
    assert res.code == 0 and SECRET not in res.stdout + res.stderr and MASK in res.stdout


def test_resume_asks_for_the_secret_again_and_reruns_what_held_it(write_wf, tmp_path):
    # a echoes the secret (its stored outputs would be masked: it must run again on resume);
    # p does not (reused); b fails until the file `ok` exists and records what it received.
    nodes = [
        {"id": "p", "type": "shell", "params": {"command": "echo run >> p.log; echo plain"}},
        {"id": "a", "type": "shell", "params": {"command": "echo run >> a.log; echo t=${token}"}},
        {
            "id": "b",
            "type": "shell",
            "params": {"command": '[ -f ok ] && echo "${a.stdout} ${p.stdout}" > got.txt'},
        },
    ]
    doc = wf(nodes, [("p", "a"), ("a", "b")], inputs={"token": {"type": "string", "secret": True}})
    path = write_wf(doc)
    assert run_cli("run", str(path), f"token={SECRET}", "-q", cwd=tmp_path).code == 1
    assert leaks(tmp_path) == []
    (tmp_path / "ok").touch()

    res = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert res.code == 2
    problem = res.json["problems"][0]
    assert problem["field"] == "inputs.token" and "secret" in problem["hint"]
    assert "token=" in problem["hint"] and secret_env_var("token") in problem["hint"]

    res = run_cli("run", str(path), "--resume", "last", f"token={SECRET}", cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert "'a' re-runs" in res.stderr and SECRET not in res.stderr + res.stdout
    assert (tmp_path / "got.txt").read_text().strip() == f"t={SECRET} plain"  # real value
    assert (tmp_path / "p.log").read_text().split() == ["run"]  # p was reused
    assert (tmp_path / "a.log").read_text().split() == ["run", "run"]  # a ran again
    (tmp_path / "got.txt").unlink()
    assert leaks(tmp_path) == []


def test_a_secret_can_come_from_the_environment(write_wf, tmp_path):
    doc = wf(
        [
            {"id": "a", "type": "shell", "params": {"command": "echo ${api_key} > got.txt"}},
            {"id": "b", "type": "shell", "params": {"command": "[ -f ok ]"}},
        ],
        [("a", "b")],
        inputs={"api_key": {"type": "string", "secret": True}},
    )
    path = write_wf(doc)
    env = {secret_env_var("api_key"): SECRET}
    assert secret_env_var("api_key") == "FANFLOW_SECRET_API_KEY"
    res = run_cli("run", str(path), "--output-format", "json", cwd=tmp_path, env=env)
    assert res.code == 1 and (tmp_path / "got.txt").read_text().strip() == SECRET
    (tmp_path / "got.txt").unlink()
    (tmp_path / "ok").touch()
    # resume reads it from the environment again; a rotated secret does not refuse the resume
    res = run_cli(
        "run",
        str(path),
        "--resume",
        "last",
        "-q",
        cwd=tmp_path,
        env={secret_env_var("api_key"): "rotated-value"},
    )
    assert res.code == 0, res.stderr
    assert leaks(tmp_path) == [] and leaks(tmp_path, "rotated-value") == []


def test_a_non_secret_input_holding_the_secret_must_be_given_again(write_wf, tmp_path):
    doc = wf(
        [{"id": "a", "type": "shell", "params": {"command": "[ -f ok ] && echo ${url}"}}],
        inputs={"token": {"type": "string", "secret": True}, "url": {"type": "string"}},
    )
    path = write_wf(doc)
    url = f"https://example.com/?key={SECRET}"
    assert run_cli("run", str(path), f"token={SECRET}", f"url={url}", "-q", cwd=tmp_path).code == 1
    assert leaks(tmp_path) == []
    (tmp_path / "ok").touch()
    res = run_cli("run", str(path), "--resume", "last", f"token={SECRET}", cwd=tmp_path)
    assert res.code == 2 and "'url'" in res.stderr  # masked in the store: cannot be reused
    res = run_cli(
        "run",
        str(path),
        "--resume",
        "last",
        f"token={SECRET}",
        f"url={url}",
        "--output-format",
        "json",
        cwd=tmp_path,
    )
    assert res.code == 0, res.stderr


def test_the_schema_declares_secret(tmp_path):
    res = run_cli("schema")
    spec = res.json["$defs"]["InputSpec"]["properties"]["secret"]
    assert spec == {"type": "boolean", "default": False}


# -- the masking itself (in-process, fast) ------------------------------------------------------


def test_masking_walks_values_and_keeps_what_has_no_secret():
    s = Secrets.from_values(["abc-123", 'q"uote'])
    value = {"k": ["x abc-123 y", {"deep": "abc-123"}], "n": 5, "clean": "nothing here"}
    masked = s.value(value)
    assert masked == {"k": [f"x {MASK} y", {"deep": MASK}], "n": 5, "clean": "nothing here"}
    assert value["k"][0] == "x abc-123 y"  # the original is not touched
    clean = {"a": ["b", {"c": 1}]}
    assert s.value(clean) is clean  # nothing to mask: the very same object, no copy
    # the JSON-escaped form inside JSON text, and the percent-encoded one in a URL, too
    assert s.text(json.dumps({"v": 'q"uote'})) == '{"v": "***"}'
    assert Secrets.from_values(["a+b/c d"]).text("GET /x?k=a%2Bb%2Fc+d") == "GET /x?k=***"


def test_no_secret_input_means_no_redaction_at_all():
    from fanflow.load.reader import parse_source

    plain = parse_source(
        wf(
            [{"id": "a", "type": "shell", "params": {"command": "true"}}],
            inputs={"t": {"type": "string"}},
        )
    )
    assert Secrets.of(plain, {"t": "x"}) is None
    secret = parse_source(
        wf(
            [{"id": "a", "type": "shell", "params": {"command": "true"}}],
            inputs={"t": {"type": "string", "secret": True, "required": False}},
        )
    )
    assert Secrets.of(secret, {"t": None}) is None  # declared but not given: nothing to hide
    assert Secrets.of(secret, {"t": "x"}) is not None


@pytest.mark.parametrize("value", [12345, ["ab", "cd"], {"user": "u", "password": "pw-9"}])
def test_non_string_secrets_mask_their_text(value):
    s = Secrets.from_values([value])
    text = json.dumps(value)
    assert s.text(f"got {text}") == f"got {MASK}"
