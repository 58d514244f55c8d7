"""The docs as a user reads them: every Python block of README.md and docs/*.md runs, every
`mimi COMMAND --flag` they show names a command and flags it has, and the table of common
options in docs/cli.md says which commands take each one.

A fenced block right after a `<!-- skip-test -->` line is not run (for blocks that need what a
test cannot have: real weights, a GPU, a network). Python blocks run in a fresh directory that
holds `tokens/`, a token dataset `mimi encode` wrote (K = 8, with a `text` column), with
`load_codec` giving the tiny synthetic codec whatever weights they name.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mimi_cli import cli
from mimi_cli.encode import EncodeOptions, encode_dataset
from mimi_cli.formats.manifests import ManifestOptions
from tests.helpers import CORPUS, write_corpus

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "<!-- skip-test -->"
SHELL = ("sh", "bash", "shell", "console", "")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skipped: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file."""
    found, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        before = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        found.append(Block(path, i + 1, lines[i][3:].strip(), "\n".join(lines[i + 1:end]) + "\n", before == SKIP))
        i = end + 1
    return found


def prose(path: Path) -> str:
    """A markdown file without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


PYTHON = [b for p in DOCS for b in blocks(p) if b.language == "python"]

# What the blocks say they give, checked after they ran.
CLAIMS = {
    "README.md": lambda scope: tuple(scope["codes"].shape) == (4, 8, 2),  # "[4, 8, 2]: the frames ... complete"
    "docs/training.md": lambda scope: bool(torch.isfinite(scope["loss"])) and scope["epoch"] == 1,
}


def test_the_docs_have_python_blocks_to_run():
    assert {b.path.name for b in PYTHON} >= {"README.md", "training.md"}


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.name)
def test_python_block_runs(block, tiny, tmp_path, monkeypatch):
    if block.skipped:
        pytest.skip(f"marked {SKIP}")
    import mimi_cli.codec

    write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "list.tsv").write_text("path\ttext\n" + "".join(
        f"{rel}\tutterance {i}\n" for i, (rel, *_) in enumerate(CORPUS)))
    encode_dataset(tiny, [str(tmp_path / "corpus" / "list.tsv")], tmp_path / "tokens",
                   EncodeOptions(num_codebooks=8, manifest=ManifestOptions(keep_columns=("text",))))
    monkeypatch.setattr(mimi_cli.codec, "load_codec", lambda *args, **kwargs: tiny)
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(block.code, block.name, "exec"), scope)
    claim = CLAIMS.get(str(block.path.relative_to(ROOT)))
    assert claim is None or claim(scope), f"{block.name} does not give what it says"


@cache
def help_text(*command: str) -> str:
    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@cache
def commands() -> frozenset[str]:
    """The subcommands `mimi --help` lists."""
    listing = help_text().split("Commands:", 1)[1]
    return frozenset(m.group(1) for m in re.finditer(r"^  (\S+)", listing, re.M))


@cache
def options(*command: str) -> frozenset[str]:
    """The flags `mimi [COMMAND] --help` defines (its option lines, not flags named in the text)."""
    found = set()
    for m in re.finditer(r"^  (-.*?)(?:\s{2,}|$)", help_text(*command), re.M):
        found.update(part.split()[0] for part in m.group(1).split(", "))
    return frozenset(found)


def invocations(command_line: str) -> list[tuple[str | None, list[str]]]:
    """(subcommand, flags) of each `mimi ...` in a shell line; `a | b` in `mimi x --a | --b` is
    an alternative of flags, not a pipe. Placeholders in capitals (COMMAND) are skipped."""
    try:
        tokens = shlex.split(command_line, comments=True)
    except ValueError:  # an unbalanced quote in a prose fragment
        tokens = command_line.split()
    found: list[tuple[str | None, list[str]]] = []
    current: list[str] | None = None
    for i, token in enumerate(tokens):
        if token == "mimi":
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            current = []
            sub = None if following.startswith("-") or not following else following
            if sub is not None and sub.isupper():
                current = None
                continue
            found.append((sub, current))
        elif token in ("|", "&&", ";"):
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            if not following.startswith("-"):
                current = None
        elif current is not None:
            flag = token.strip("[]").split("=", 1)[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", flag):
                current.append(flag)
    return found


def shell_lines() -> list[tuple[str, str]]:
    """(where, line) of every shell line in fenced blocks and every inline code span in prose."""
    out = []
    for path in DOCS:
        for b in blocks(path):
            if b.language in SHELL:
                out += [(b.name, ln) for ln in b.code.replace("\\\n", " ").splitlines()]
        out += [(str(path.relative_to(ROOT)), " ".join(m.group(1).split()))
                for m in re.finditer(r"`([^`]+)`", prose(path))]
    return out


def test_every_mimi_command_line_in_the_docs_uses_flags_the_command_has():
    checked, wrong = 0, []
    for where, line in shell_lines():
        for sub, flags in invocations(line):
            if sub is not None and sub not in commands():
                wrong.append(f"{where}: `{line}`: no command {sub!r}")
                continue
            have = options(sub) if sub else options()
            wrong += [f"{where}: `{line}`: mimi {sub or ''} has no {flag}" for flag in flags if flag not in have]
            checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked > 50  # the docs show many; finding few means the parsing broke


def option_table() -> list[tuple[str, set[str], str]]:
    """docs/cli.md's table of common options: (flag, the commands it names, its notes)."""
    rows = []
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`-"):
            flag = cells[0].strip("`").split()[0].split("/")[-1]
            rows.append((flag, set(re.findall(r"`([a-z-]+)`", cells[1])), cells[2]))
    return rows


def test_the_table_of_common_options_names_exactly_the_commands_that_take_each():
    table = option_table()
    assert {flag for flag, _, _ in table} >= {"--weights", "--device", "--dtype", "--num-codebooks", "--quiet"}
    for flag, named, notes in table:
        taking = {c for c in commands() if flag in options(c)}
        assert named == taking, f"docs/cli.md: {flag} is taken by {sorted(taking)}, the table says {sorted(named)}"
        for env in re.findall(r"env `([A-Z_]+)`", notes):  # each of them reads the variable the table names
            assert all(f"env var: {env}" in " ".join(help_text(c).split()) for c in named), (flag, env)
