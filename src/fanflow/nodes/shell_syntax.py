"""Shell-aware substitution: a template value in a shell command is data, in every context.

`analyze` reads a command the way bash does (quotes, `$(…)`, backticks, `${…}` operands,
arithmetic, `[[ … ]]`, `case`, here-documents, comments) and tells, for each template position,
how to reference the value there: every value travels in a variable (`${FANFLOW_VALUE_n}`) and the
command holds a reference quoted for its context. Positions where bash would evaluate the text as
code (arithmetic, variable names) accept only a plain integer or name, checked at run time; positions
with no safe reference (a quoted here-document, `eval`'s arguments) are refused when the workflow is
validated. A construct this reader does not understand refuses every template of the command
rather than guess. `deliver` gets values and commands past the kernel's 128 KiB limit on one
argument or environment string. Design notes and measurements: docs/shell.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fanflow import templates
from fanflow.errors import NodeError

HOLE = "\x00"  # stands for a template while the command is read; a command cannot hold NUL

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=\+?=|\[)")
_META = " \t\n;&|()<>"
# Runs of characters with no meaning in a context, skipped at once (long literal commands).
_PLAIN_WORD = re.compile(r"[^\s;&|()<>'\"$`\\=\x00]+")
_PLAIN_DQ = re.compile(r"[^\"$`\\\x00]+")
_PLAIN_SQ = re.compile(r"[^'\\\x00]+")
_PLAIN_COMMENT = re.compile(r"[^\n\x00]+")
_ARITH_OPS = {"-eq", "-ne", "-lt", "-le", "-gt", "-ge"}
_DECLARE = {"declare", "typeset", "local", "export", "readonly"}
_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "ash", "mksh"}
_PROMPT_VARS = {"PS0", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND"}  # bash expands them as code
_RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "{", "}", "!",
             "time", "in", "function", "coproc", "select"}  # fmt: skip

ENV_HINT = (
    'pass the value through the node\'s `env` ("env": {"VALUE": "${…}"}) and reference '
    '"$VALUE" in the command, or through `stdin`'
)


@dataclass(frozen=True, slots=True)
class Slot:
    """How one template position is referenced. `form`: word `"${V}"`, dq `${V}`, sq
    `'"${V}"'`, ansi `'"${V}"$'`, arith `${V}`, drop (a comment: nothing). `check`: the value
    must be a plain integer or a variable name (bash evaluates the text there)."""

    form: str
    check: str | None = None
    context: str = ""
    refusal: str | None = None  # no safe reference exists here: refused at validation
    hint: str | None = None


@dataclass
class _Word:
    static: str | None  # the word's text when it is plain literal text
    holes: list[int]  # positions of the templates directly in this word
    name_holes: list[int]  # of those, the ones before the first literal `=`


class _Unsure(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class _Scanner:
    def __init__(self, s: str):
        self.s = s
        self.i = 0
        self.slots: dict[int, Slot] = {}
        self.heredocs: list[tuple[str, bool, bool]] = []  # delimiter, quoted, strip tabs
        self.int_names: set[str] = set()
        self.backtick = False  # inside `…`: a backtick closes it (nested ones are refused)

    # --- helpers -------------------------------------------------------------------------------

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def starts(self, text: str) -> bool:
        return self.s.startswith(text, self.i)

    def hole(self, slot: Slot) -> int:
        pos = self.i
        self.slots[pos] = slot
        self.i += 1
        return pos

    def refuse_backslash(self) -> None:
        # `\${x}`: the backslash would escape the reference, not the value.
        self.slots[self.i + 1] = Slot("word", refusal="a template right after a backslash",
                                      hint="remove the backslash (the value is never expanded)")  # fmt: skip
        self.i += 2

    # --- command lists -------------------------------------------------------------------------

    def command_list(self, stop: str) -> str:
        """Commands until `stop` (")", "`", "case" for a case item, "" for the end); returns
        the terminator met: ")", "`", ";;", "esac" or ""."""
        words: list[_Word] = []
        start = True  # the next word is in command position
        while True:
            c = self.peek()
            if c == "":
                if stop:
                    raise _Unsure("an unclosed construct")
                self.finish(words)
                return ""
            if c in " \t":
                self.i += 1
            elif c == "\\" and self.peek(1) == "\n":
                self.i += 2
            elif c == "#":  # a word that begins with '#' begins a comment
                self.comment()
            elif c == "\n":
                self.i += 1
                self.finish(words)
                words, start = [], True
                self.read_heredocs()
            elif stop == ")" and c == ")":
                self.i += 1
                self.finish(words)
                return ")"
            elif stop == "`" and c == "`":
                self.i += 1
                self.finish(words)
                return "`"
            elif stop == "case" and (self.starts(";;") or self.starts(";&")):
                self.i += 3 if self.starts(";;&") else 2
                self.finish(words)
                return ";;"
            elif c in ";&|":
                self.i += 2 if self.s[self.i : self.i + 2] in ("&&", "||", "|&", ";;") else 1
                self.finish(words)
                words, start = [], True
            elif c == "(" and start and self.starts("(("):
                self.i += 2
                self.arith("))", "an arithmetic command (( … ))")
                start = False
            elif c == "(" and start:
                self.i += 1
                if self.command_list(")") != ")":
                    raise _Unsure("a subshell")
                start = False
            elif c == "(" and len(words) == 1 and self.s[self.i + 1 : self.i + 2] == ")":
                self.i += 2  # f() { …; }
                words, start = [], True
            elif c in "<>" and self.peek(1) != "(":
                self.redirection()
            elif c in "()":
                raise _Unsure(f"an unexpected '{c}'")
            else:
                if start and _ASSIGN.match(self.s, self.i) and self.assignment():
                    continue  # A=1 cmd: still in command position
                word = self.word(decl=bool(words) and words[0].static in _DECLARE)
                if start and word.static == "case":
                    self.case()
                    continue
                if start and word.static == "[[":
                    self.cond()
                    start = False
                    continue
                if start and word.static == "for" and self.skip_blanks() and self.starts("(("):
                    self.i += 2
                    self.arith("))", "an arithmetic for loop")
                    continue
                if start and stop == "case" and word.static == "esac":
                    return "esac"
                if start and word.static in _RESERVED:
                    continue
                words.append(word)
                start = False

    def skip_blanks(self) -> bool:
        while self.peek() in (" ", "\t"):
            self.i += 1
        return True

    def skip(self, plain: re.Pattern[str]) -> None:
        m = plain.match(self.s, self.i)
        if m:
            self.i = m.end()

    def comment(self) -> None:
        while self.peek() not in ("", "\n"):
            if self.peek() == HOLE:
                self.hole(Slot("drop", context="a comment"))
            else:
                self.skip(_PLAIN_COMMENT)

    def redirection(self) -> None:
        if self.starts("<<<"):
            self.i += 3
        elif self.starts("<<"):
            self.i += 2
            strip = self.peek() == "-"
            self.i += strip
            self.skip_blanks()
            begin = self.i
            while self.peek() and self.peek() not in _META:
                if self.peek() == HOLE:
                    raise _Unsure("a template in a here-document delimiter")
                self.i += 2 if self.peek() == "\\" else 1
            raw = self.s[begin : self.i]
            if not raw:
                raise _Unsure("a here-document without a delimiter")
            quoted = any(q in raw for q in "'\"\\")
            self.heredocs.append((re.sub(r"['\"\\]", "", raw), quoted, strip))
            return
        else:
            self.i += 1
            while self.peek() in "<>&|":
                self.i += 1
            if self.peek() == "-":  # 2>&-
                self.i += 1
        self.skip_blanks()
        if self.peek() and self.peek() not in _META:
            self.word()  # the target: plain word context

    def read_heredocs(self) -> None:
        pending, self.heredocs = self.heredocs, []
        for delimiter, quoted, strip in pending:
            body_start = self.i
            # The body ends at the first line that is exactly the delimiter (after tabs, <<-).
            line = re.compile(("^\t*" if strip else "^") + re.escape(delimiter) + "$", re.M)
            m = line.search(self.s, self.i)
            end = m.start() if m else len(self.s)
            after = min(m.end() + 1, len(self.s)) if m else len(self.s)
            if quoted:
                self.i = after
                pos = body_start - 1
                while (pos := self.s.find(HOLE, pos + 1, end)) >= 0:
                    self.slots[pos] = Slot(
                        "dq",
                        context="a quoted here-document (<<'EOF')",
                        refusal="a template inside a quoted here-document (<<'EOF'), where "
                        "bash expands nothing: no reference to the value can work there",
                        hint="pass the value through `stdin`, or through `env` "
                        '("env": {"VALUE": "${…}"}) and reference $VALUE in an unquoted '
                        "here-document (<<EOF)",
                    )
                continue
            sub = _Scanner(self.s[:end])
            sub.i, sub.int_names = body_start, self.int_names
            sub.double_quoted(check=None, heredoc=True)
            self.slots.update(sub.slots)
            self.i = after

    def assignment(self) -> bool:
        """NAME=value, NAME+=value, NAME[sub]=value, NAME=(…) in command position."""
        m = _ASSIGN.match(self.s, self.i)
        assert m is not None
        name = m.group(0)
        j = m.end()
        if self.s.startswith("[", j):
            close = _matching_bracket(self.s, j)
            if close < 0 or not re.match(r"\+?=", self.s[close + 1 :]):
                return False  # a word such as a[bc] (a glob)
            self.i = j + 1
            self.arith("]", "an array subscript")
            j = self.i
        self.i = j + (2 if self.s.startswith("+=", j) else 1)
        if self.peek() == "(":
            self.i += 1
            self.array_literal()
        elif name in _PROMPT_VARS:
            self.refuse(self.word().holes, f"a template in the value of {name}, which bash "
                        "expands as a prompt (running any $( … ) in it)", ENV_HINT)  # fmt: skip
        elif name in self.int_names:
            self.upgrade(self.word(), "integer", f"the value of {name}, declared -i")
        else:
            self.word()
        return True

    def array_literal(self) -> None:
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure("an unclosed array literal")
            if c in " \t\n":
                self.i += 1
            elif c == ")":
                self.i += 1
                return
            elif c == "#":
                self.comment()
            elif c == "[":
                close = _matching_bracket(self.s, self.i)
                if close < 0 or not self.s.startswith("=", close + 1):
                    self.word()
                    continue
                self.i += 1
                self.arith("]", "an array subscript")
                self.i += 1  # '='
                self.word()
            else:
                self.word()

    # --- words -----------------------------------------------------------------------------------

    def word(self, check: str | None = None, decl: bool = False) -> _Word:
        """One shell word in a command: ends at an unquoted metacharacter."""
        begin = self.i
        holes: list[int] = []
        static = True
        eq_seen = False
        name_holes: list[int] = []
        if decl and _ASSIGN.match(self.s, self.i):
            m = _ASSIGN.match(self.s, self.i)
            assert m is not None
            if self.s.startswith("[", m.end()):
                close = _matching_bracket(self.s, m.end())
                if close >= 0:
                    self.i = m.end() + 1
                    self.arith("]", "an array subscript")
        while True:
            c = self.peek()
            if c == "" or (c in _META and not (c in "<>" and self.peek(1) == "(")):
                break
            if c == "`" and self.backtick:
                break
            if c == HOLE:
                holes.append(self.hole(Slot("word", check)))
                if not eq_seen:
                    name_holes.append(holes[-1])
                static = False
                continue
            static = static and c not in "'\"$`\\"
            if c == "=":
                eq_seen = True
            holes.extend(self.expansion(check, dq=False))
            self.skip(_PLAIN_WORD)
        text = self.s[begin : self.i]
        return _Word(text if static else None, holes, name_holes)

    def expansion(self, check: str | None, dq: bool) -> list[int]:
        """One element of a word at self.i (a quote, an expansion, an escape or a character);
        returns the template positions it holds directly (for upgrading their check)."""
        c = self.peek()
        if c == "\\":
            if self.peek(1) == HOLE:
                self.refuse_backslash()
            else:
                self.i += 2
            return []
        if c == "'" and not dq:
            self.i += 1
            return self.single_quoted("sq", check)
        if not dq and (c == '"' or self.starts('$"')):
            self.i += 2 if c == "$" else 1
            return self.double_quoted(check)
        if self.starts("$'") and not dq:
            self.i += 2
            return self.single_quoted("ansi", check)
        if self.starts("$(("):
            self.i += 3
            self.arith("))", "an arithmetic expansion $(( … ))")
            return []
        if self.starts("$(") or (c in "<>" and self.peek(1) == "(" and not dq):
            self.i += 2
            if self.command_list(")") != ")":
                raise _Unsure("a command substitution")
            return []
        if self.starts("$["):
            self.i += 2
            self.arith("]", "an arithmetic expansion $[ … ]")
            return []
        if self.starts("${"):
            self.i += 2
            return self.parameter(check, dq)
        if c == "`":
            self.backticks()
            return []
        self.i += 1
        return []

    def single_quoted(self, form: str, check: str | None) -> list[int]:
        holes: list[int] = []
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure("an unclosed quote")
            if c == "'":
                self.i += 1
                return holes
            if form == "ansi" and c == "\\":
                if self.peek(1) == HOLE:
                    self.refuse_backslash()
                else:
                    self.i += 2
            elif c == HOLE:
                holes.append(self.hole(Slot(form, check)))
            else:
                self.i += 1
                self.skip(_PLAIN_SQ)

    def double_quoted(self, check: str | None, heredoc: bool = False) -> list[int]:
        """Inside "…" (or an unquoted here-document body, up to the end of the text)."""
        holes: list[int] = []
        while True:
            c = self.peek()
            if c == "":
                if heredoc:
                    return holes
                raise _Unsure("an unclosed double quote")
            if c == '"' and not heredoc:
                self.i += 1
                return holes
            if c == HOLE:
                holes.append(self.hole(Slot("dq", check)))
            elif c == "\\" or c in "$`":
                holes.extend(self.expansion(check, dq=True))
            else:
                self.i += 1
                self.skip(_PLAIN_DQ)

    def backticks(self) -> None:
        end = self.s.find("`", self.i + 1)
        if end < 0:
            raise _Unsure("an unclosed backtick")
        if "\\" in self.s[self.i + 1 : end]:
            raise _Unsure("a backslash inside backticks (use $( … ) instead)")
        self.i += 1
        self.backtick = True
        if self.command_list("`") != "`":
            raise _Unsure("a backtick substitution")
        self.backtick = False

    def parameter(self, check: str | None, dq: bool) -> list[int]:
        """After `${`: name, subscript, operator and operand, up to the closing `}`."""
        c = self.peek()
        if c == HOLE:
            raise _Unsure("a template as a parameter name")
        if c in "#!" and self.peek(1) not in ("}", ""):
            self.i += 1
        m = _NAME.match(self.s, self.i) or re.compile(r"[0-9]+|[@*#?$!0-]").match(self.s, self.i)
        if not m:
            raise _Unsure("a parameter expansion")
        self.i = m.end()
        if self.peek() == "[":
            self.i += 1
            if self.peek() in "@*" and self.peek(1) == "]":
                self.i += 2
            else:
                self.arith("]", "an array subscript")
        op = self.peek()
        holes: list[int] = []
        if op == "}":
            self.i += 1
        elif op in "*@" and "}" in self.s[self.i : self.i + 3]:
            self.i = self.s.index("}", self.i) + 1  # ${!prefix*}, ${var@Q}
        elif op == ":" and self.peek(1) not in "-=?+":
            self.i += 1
            self.arith(":}", "a substring offset ${var:offset:length}")
            if self.s[self.i - 1] == ":":
                self.arith("}", "a substring length ${var:offset:length}")
        elif op in ":-=?+":
            self.i += 2 if op == ":" else 1
            holes = self.operand("}", check, dq, pattern=False)
        elif op in "#%^,":
            self.i += 2 if self.peek(1) == op else 1
            holes = self.operand("}", check, dq, pattern=True)
        elif op == "/":
            self.i += 2 if self.peek(1) in "/#%" else 1
            holes = self.operand("/}", check, dq, pattern=True)
            if self.s[self.i - 1] == "/":
                holes += self.operand("}", check, dq, pattern=True)
        else:
            raise _Unsure(f"the parameter operator '{op}'")
        return holes

    def operand(self, stops: str, check: str | None, dq: bool, pattern: bool) -> list[int]:
        """The word after a ${…} operator. A value in a pattern or replacement is quoted even
        inside "…" (else `*` would match and `&` stand for the match); in a default value
        inside "…" it is not (bash would not remove the inner quotes there)."""
        holes: list[int] = []
        form = "word" if pattern or not dq else "dq"
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure("an unclosed ${…}")
            if c in stops:
                self.i += 1
                return holes
            if c == HOLE:
                holes.append(self.hole(Slot(form, check)))
            elif dq and (self.starts("$'") or (c == "'" and not pattern)):
                self.i += 1  # literal inside "${v:-'…'}"
            elif c == "'" and dq:
                self.i += 1
                if HOLE in self.s[self.i : self.s.find("'", self.i)]:
                    raise _Unsure("a template in single quotes inside a quoted ${…} pattern")
                self.single_quoted("sq", check)
            else:
                holes.extend(self.expansion(check, dq=False))

    # --- arithmetic, conditionals, case ---------------------------------------------------------

    def arith(self, stop: str, context: str) -> None:
        """An arithmetic expression up to `stop` ("))", "]", ":}" or "}"): every template in it
        must be a plain integer, referenced unquoted so bash reads digits, never an expression."""
        depth = 0
        slot = Slot("arith", "integer", context)
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure(f"an unclosed {context}")
            if depth == 0 and (self.starts(stop) if stop == "))" else c in stop):
                self.i += len(stop) if stop == "))" else 1
                return
            if c == HOLE:
                self.hole(slot)
            elif c in "([":
                depth += 1
                self.i += 1
            elif c in ")]":
                if depth == 0:
                    raise _Unsure(f"an unbalanced {context}")
                depth -= 1
                self.i += 1
            elif c == "'":
                raise _Unsure(f"a single quote in {context}")
            elif c == '"':
                self.i += 1
                self.double_quoted("integer")
            elif c in "$`\\":
                self.expansion("integer", dq=False)
            else:
                self.i += 1

    def cond(self) -> None:
        """[[ … ]]: operands of -eq … -ge are arithmetic, the operand of -v / -R a name."""
        tokens: list[_Word | str] = []
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure("an unclosed [[")
            if c in " \t\n":
                self.i += 1
            elif c in _META:
                j = self.i
                while self.peek() and self.peek() in "&|<>()!":
                    self.i += 1
                self.i += self.i == j
                tokens.append(self.s[j : self.i])
            else:
                word = self.word()
                if word.static == "]]":
                    break
                tokens.append(word)
        for k, tok in enumerate(tokens):
            op = tok.static if isinstance(tok, _Word) else None
            if op in _ARITH_OPS:
                for side in (k - 1, k + 1):
                    self.upgrade(tokens[side] if 0 <= side < len(tokens) else None, "integer",
                                 f"an arithmetic comparison [[ … {op} … ]]")  # fmt: skip
            elif op in ("-v", "-R") and k + 1 < len(tokens):
                self.upgrade(tokens[k + 1], "name", f"the variable name of [[ {op} … ]]")

    def case(self) -> None:
        self.skip_blanks()
        self.word()  # the subject
        while True:
            c = self.peek()
            if c == "":
                raise _Unsure("an unclosed case")
            if c in " \t\n":
                self.i += 1
                if c == "\n":
                    self.read_heredocs()
                continue
            if c == "#":
                self.comment()
                continue
            word = self.word() if c not in "()|" else None
            if word is not None and word.static == "esac":
                return
            if word is not None and word.static == "in":
                continue
            # a pattern list up to ')', then the item's commands
            while self.peek() != ")":
                if self.peek() == "":
                    raise _Unsure("an unclosed case pattern")
                if self.peek() in " \t|(":
                    self.i += 1
                else:
                    self.word()
            self.i += 1
            if self.command_list("case") == "esac":
                return

    def upgrade(self, tok: _Word | str | None, check: str, context: str) -> None:
        if isinstance(tok, _Word):
            for pos in tok.holes:
                old = self.slots[pos]
                self.slots[pos] = Slot(old.form, check, context, old.refusal, old.hint)

    def refuse(self, holes: list[int], message: str, hint: str) -> None:
        for pos in holes:
            self.slots[pos] = Slot(self.slots[pos].form, refusal=message, hint=hint)

    # --- builtins that read their arguments as names or code -----------------------------------

    def finish(self, words: list[_Word]) -> None:
        if not words:
            return
        while len(words) > 1 and words[0].static in ("command", "builtin", "exec"):
            words = words[1:]
        self.shell_scripts(words)
        name = words[0].static
        args = words[1:]
        if name == "let":
            for w in args:
                self.upgrade(w, "integer", "the arithmetic of `let`")
        elif name == "eval" or (name == "trap" and args):
            first = _first_operand(args)
            for w in args if name == "eval" else [first] if first else []:
                self.refuse(w.holes, f"a template in the arguments of `{name}`, which runs "
                            "them as shell code", ENV_HINT)  # fmt: skip
        elif name in _DECLARE:
            self.declaration(name, args)
        elif name == "read":
            self.name_args(args, "adinNptu", name_options="a", what="read")
        elif name in ("mapfile", "readarray"):
            self.name_args(args, "dnOsuCc", name_options="", what=name)
        elif name == "unset":
            self.name_args(args, "", name_options="", what=name)
        elif name == "printf" and args and args[0].static and args[0].static.startswith("-v"):
            if args[0].static == "-v" and len(args) > 1:
                self.upgrade(args[1], "name", "the variable name of `printf -v`")
        elif name == "getopts" and len(args) > 1:
            self.upgrade(args[1], "name", "the variable name of `getopts`")
        elif name in ("test", "[", "wait"):
            for k, w in enumerate(args[:-1]):
                if w.static in ("-v", "-R", "-p"):
                    self.upgrade(args[k + 1], "name", f"the variable name of `{name} {w.static}`")

    def shell_scripts(self, words: list[_Word]) -> None:
        """bash -c SCRIPT, also behind a wrapper (timeout 5 sh -c, sudo bash -c, find -exec sh
        -c): the script is code; the arguments after it are data ($1, $2, …)."""
        for k, shell in enumerate(words):
            name = _basename(shell.static)
            if name not in _SHELLS:
                continue
            after = words[k + 1 :]
            for j, w in enumerate(after[:-1]):
                if w.static and re.fullmatch(r"-[A-Za-z]*c[A-Za-z]*", w.static):
                    self.refuse(after[j + 1].holes, f"a template in the script of `{name} -c`, "
                                "which runs it as shell code",
                                "pass it as an argument after the script (bash -c 'echo \"$1\"' "
                                f"_ \"${{…}}\"), or {ENV_HINT}")  # fmt: skip
                    return

    def name_args(self, args: list[_Word], with_value: str, name_options: str, what: str) -> None:
        context = f"a variable name given to `{what}`"
        k = 0
        while k < len(args):
            w = args[k]
            if w.static and w.static.startswith("-") and w.static != "-":
                letters = w.static[1:]
                for j, letter in enumerate(letters):
                    if letter in with_value:
                        if j == len(letters) - 1 and k + 1 < len(args):
                            k += 1
                            if letter in name_options:
                                self.upgrade(args[k], "name", context)
                        break
            else:
                self.upgrade(w, "name", context)
            k += 1

    def declaration(self, name: str, args: list[_Word]) -> None:
        flags = "".join(w.static[1:] for w in args if w.static and w.static[:1] in "-+")
        for w in args:
            if w.static is not None:
                if "i" in flags and w.static[:1] not in "-+":
                    self.int_names.add(w.static.split("=")[0])
                continue
            value_holes = [p for p in w.holes if p not in w.name_holes]
            self.upgrade(
                _Word(None, w.name_holes, []), "name", f"a variable name given to `{name}`"
            )
            if "a" in flags or "A" in flags:
                self.refuse(value_holes, f"a template in the value of `{name} -{'a' if 'a' in flags else 'A'}`, "
                            "which reads it as an array literal (shell code)",
                            "build the array in the command: name=(\"${…}\")")  # fmt: skip
            elif "i" in flags:
                self.upgrade(_Word(None, value_holes, []), "integer", f"the value of `{name} -i`")
            elif "n" in flags:
                self.upgrade(_Word(None, value_holes, []), "name", f"the target of `{name} -n`")


def _basename(word: str | None) -> str | None:
    return word.rsplit("/", 1)[-1] if word else None


def _first_operand(args: list[_Word]) -> _Word | None:
    for w in args:
        if w.static == "--":
            continue
        if w.static and w.static.startswith("-"):
            continue
        return w
    return None


def _matching_bracket(s: str, j: int) -> int:
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "[":
            depth += 1
        elif s[k] == "]":
            depth -= 1
            if depth == 0:
                return k
        elif s[k] in " \t\n;&|":
            return -1
    return -1


@lru_cache(maxsize=1024)
def analyze(segments: tuple[str | None, ...]) -> tuple[Slot, ...]:
    """The slot of every template (a None in `segments`, between literal texts), in order."""
    text = "".join(HOLE if seg is None else seg for seg in segments)
    count = segments.count(None)
    if HOLE in "".join(seg for seg in segments if seg is not None):
        return _refuse_all(count, "the command holds a NUL character")
    scanner = _Scanner(text)
    try:
        scanner.command_list("")
        scanner.read_heredocs()
    except _Unsure as exc:
        return _refuse_all(count, exc.why)
    positions = [k for k, ch in enumerate(text) if ch == HOLE]
    if any(p not in scanner.slots for p in positions):
        return _refuse_all(count, "a position this reader does not classify")
    return tuple(scanner.slots[p] for p in positions)


def _refuse_all(count: int, why: str) -> tuple[Slot, ...]:
    slot = Slot("word", refusal=f"fanflow cannot tell how bash reads this template "
                f"(the command has {why})", hint=ENV_HINT)  # fmt: skip
    return (slot,) * count


def _segments(compiled: templates.Template) -> tuple[str | None, ...]:
    return tuple(p if isinstance(p, str) else None for p in compiled.parts)


def problems(command: Any) -> list[tuple[str, str | None]]:
    """Static refusals for a command as written: (message, hint) per refused template."""
    if not isinstance(command, str):
        return []
    try:
        compiled = templates.parse(command)
    except templates.TemplateSyntaxError:
        return []  # reported by the template checks
    if not isinstance(compiled, templates.Template):
        return []
    exprs = [p for p in compiled.parts if isinstance(p, templates.Expr)]
    return [(f"${{{e.text}}}: {slot.refusal}", slot.hint)
            for e, slot in zip(exprs, analyze(_segments(compiled)), strict=True) if slot.refusal]  # fmt: skip


_FORMS = {"word": '"${{{}}}"', "dq": "${{{}}}", "sq": "'\"${{{}}}\"'", "ansi": "'\"${{{}}}\"$'",
          "arith": "${{{}}}", "drop": ""}  # fmt: skip


def render_command(compiled: Any, scope: Any, prefix: str) -> tuple[str, dict[str, str]]:
    """The command with each template replaced by a reference to a variable holding its value,
    quoted for its context, and those variables' values. Raises NodeError where a value cannot
    be data (not a plain integer in arithmetic, not a name where bash expects one)."""
    if not isinstance(compiled, templates.Template):
        return templates.to_text(compiled), {}
    slots = iter(analyze(_segments(compiled)))
    values: dict[str, str] = {}
    out: list[str] = []
    for part in compiled.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        slot = next(slots)
        if slot.refusal:
            raise NodeError(f"${{{part.text}}}: {slot.refusal}; {slot.hint}")
        if slot.form == "drop":
            continue
        value = templates.to_text(templates.eval_expr(part, scope))
        if "\0" in value:
            raise NodeError(f"${{{part.text}}}: the value holds a NUL character, which no shell "
                            "variable can hold; pass binary data through a file")  # fmt: skip
        if slot.check == "integer":
            if not _INTEGER.fullmatch(value):
                raise NodeError(
                    f"${{{part.text}}} is in {slot.context}, where bash evaluates text as code, "
                    "and its value is not a plain integer; pass a whole number, or pass the "
                    "value through `env` and check it in the command before computing with it"
                )
            value = str(int(value))
        elif slot.check == "name" and not _NAME.fullmatch(value):
            raise NodeError(
                f"${{{part.text}}} is {slot.context}, and its value is not a plain variable name "
                "(letters, digits, _): bash would evaluate a subscript in it as code"
            )
        var = f"{prefix}{len(values)}"
        values[var] = value
        out.append(_FORMS[slot.form].format(var))
    return "".join(out), values


# --- delivery past the kernel's limits ------------------------------------------------------------

ONE_STRING_MAX = 64 * 1024  # MAX_ARG_STRLEN is 128 KiB per argv/env string; keep a margin
ENV_TOTAL_MAX = 256 * 1024  # argv + environment together share ARG_MAX (often 2 MiB)


@dataclass(frozen=True)
class Delivery:
    command: str
    env: dict[str, str]
    stdin: bytes | None


def deliver(command: str, extra_env: dict[str, str], stdin: bytes | None) -> Delivery:
    """Environment, command and stdin for `bash -c`. A variable too big for one environment
    string travels on stdin instead, ahead of the node's own stdin, and a prologue reads exactly
    its bytes into a shell variable (not exported: no child could receive it anyway); a command
    too big for one argument travels the same way and is run by `eval`."""
    env = os.environ.copy()
    big: list[tuple[str, bytes]] = []
    total = 0
    for key, value in extra_env.items():
        if "\0" in key or "\0" in value:
            raise NodeError(f"env {key!r}: a NUL character cannot be passed to a command; "
                            "pass binary data through a file")  # fmt: skip
        data = value.encode(errors="surrogateescape")
        size = len(key) + len(data) + 2
        if size > ONE_STRING_MAX or total + size > ENV_TOTAL_MAX:
            if not _NAME.fullmatch(key):
                raise NodeError(f"env {key!r} holds {len(data)} bytes, over the kernel's limit "
                                "for one environment variable, and its name is not a shell "
                                "variable name, so fanflow cannot pass it another way")  # fmt: skip
            big.append((key, data))
            env.pop(key, None)
        else:
            env[key] = value
            total += size
    prologue = "".join(f"LC_ALL=C IFS= read -r -N {len(data)} {key}\n" for key, data in big if data)
    prologue += "".join(f"{key}=\n" for key, data in big if not data)
    script = prologue + command
    head = [data for _key, data in big]
    if len(script.encode(errors="surrogateescape")) > ONE_STRING_MAX:
        data = script.encode(errors="surrogateescape")
        head.insert(0, data)
        script = (f"LC_ALL=C IFS= read -r -N {len(data)} FANFLOW_COMMAND || exit 125\n"
                  'eval "$FANFLOW_COMMAND"')  # fmt: skip
    if head:
        stdin = b"".join(head) + (stdin or b"")
    return Delivery(script, env, stdin)
