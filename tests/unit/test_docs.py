"""The docs quote only what exists, so a renamed command, target, config key or file cannot go stale silently.

Over README.md and docs/*.md, in fenced code blocks (one logical line each, `\\` continuations joined; in a ```text
block only its `code` spans) and in inline `code`, after dropping shell comments (` # ...`):

- every `rag-e2e <command>` is a command of `rag_e2e.cli.COMMANDS`;
- every `rag-e2e train ...` composes and validates with the checks `rag-e2e train` itself runs before it trains
  (`rag_e2e.launch.check_command_line`: Hydra's parser, then every point of a grid, the first of a search);
- every `make <target>` is a Makefile target, every `python -m <module>` is importable (`find_spec`), and every
  extra (`.[gpu]`, `rag_e2e[serve]`, or a `[word]` span) is in pyproject.toml;
- every quoted repository path (`experiments/`, `configs/`, `tests/`, `rag_e2e/`, `docs/`, `kernels/`) exists, and
  every relative Markdown link (and its `#anchor`) resolves;
- every shipped sweep is named in the docs, and the blocks `make covidqa` / `make results` rewrite are in the file
  the Makefile names.

Skipped, on purpose: placeholders in a command (`<run dir>`, `[overrides...]`, `...`, `$RUN`: nothing to compose;
the rest of the command is still checked); the arguments of commands other than `train` (their paths are checked
as paths); run outputs under `experiments/results/**/sweeps/` (git-ignored, written by the sweeps); and the few
quoted texts in NOT_REPO_PATHS that look like repository paths but are not.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO

from rag_e2e import cli

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MAKEFILE = REPO / "Makefile"

# Quoted texts that look like repository paths but name something else, and why.
NOT_REPO_PATHS = {
    "docs/web/page.html": "a document id `rag-e2e prepare` gives (a path relative to the input's parent)",
    "docs/records.jsonl": "a document id `rag-e2e prepare` gives (a JSONL file's line 7)",
    "docs/martin-luther.md": "a passage id of the prepared workflow corpus, as `rag-e2e ask` printed it",
}
IGNORED_OUTPUTS = re.compile(r"^experiments/results/(?:.*/)?sweeps(?:/|$)")  # .gitignore: sweep run directories

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w-]*)")
INLINE = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
COMMENT = re.compile(r"(?:^|\s)#.*$")
RAG_E2E = re.compile(r"(?<![\w-])rag-e2e[ \t]+")
COMMAND_END = re.compile(r"&&|\|\||\||;|\s&(?:\s|$)")
MAKE = re.compile(r"(?<![\w./-])make[ \t]+([a-z][\w.-]*)(?![\w.-]*=)")
PYTHON_M = re.compile(r"(?<![\w-])python[\d.]*[ \t]+-m[ \t]+([\w.]+)")
EXTRA = re.compile(r"(?:rag_e2e|\.)\[([\w,-]+)\]")
PATH = re.compile(r"(?<![\w./$~-])((?:experiments|configs|tests|rag_e2e|docs|kernels)/[\w./*-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
PLACEHOLDER = re.compile(r"<[^<>]*>|\.\.\.|…|\$")


@dataclass(frozen=True)
class Quote:
    """A piece of code the docs quote, and where."""

    file: str
    line: int
    text: str
    command: bool = True  # False: a ```text line, checked for paths only

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _inline_spans(text: str, file: str, first_line: int = 1) -> list[Quote]:
    return [Quote(file, first_line + text.count("\n", 0, m.start()), " ".join(m.group(2).split()))
            for m in INLINE.finditer(text)]


def parse_markdown(text: str, file: str) -> tuple[list[Quote], str]:
    """The code a Markdown text quotes, and its prose (fenced lines and inline code blanked, line numbers kept)."""
    quotes: list[Quote] = []
    prose: list[str] = []
    fence: str | None = None  # the open fence's info string
    start, pending = 0, ""
    for no, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if opening:
            fence = None if fence is not None else opening.group(2)
            prose.append("")
            continue
        if fence is None:
            prose.append(line)
            continue
        prose.append("")
        if fence == "text":
            quotes.append(Quote(file, no, line, command=False))
            quotes += _inline_spans(line, file, no)
            continue
        start, pending = (start, f"{pending} {line.strip()}") if pending else (no, line)
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        quotes.append(Quote(file, start, pending.strip()))
        pending = ""
    joined = "\n".join(prose)
    quotes += _inline_spans(joined, file)
    blanked = INLINE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), joined)
    return quotes, blanked


def _code(quote: Quote) -> str:
    return COMMENT.sub("", quote.text)


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in prose-like code: words are enough
        return command.split()


def rag_e2e_commands(quote: Quote) -> list[list[str]]:
    """Each `rag-e2e ...` in the quote as its argv after `rag-e2e` (up to a `;`, `&&`, `|` or `&`)."""
    code = _code(quote)
    return [_tokens(COMMAND_END.split(code[m.end():], maxsplit=1)[0]) for m in RAG_E2E.finditer(code)]


def drop_placeholders(argv: list[str]) -> tuple[list[str], list[str]]:
    """(what composes, what was skipped): `[optional ...]` groups and `<...>`, `...`, `$VAR` tokens are skipped."""
    kept, skipped, inside = [], [], False
    for token in argv:
        if inside or token.startswith("["):
            inside = not token.endswith("]")
            skipped.append(token)
        elif PLACEHOLDER.search(token):
            skipped.append(token)
        else:
            kept.append(token)
    return kept, skipped


def subcommand_problem(argv: list[str]) -> str | None:
    if not argv or argv[0].startswith(("<", "[")) or argv[0] in ("-h", "--help"):
        return None
    if argv[0] not in cli.COMMANDS:
        return f"`rag-e2e {argv[0]}` is not a command (commands: {', '.join(cli.COMMANDS)})"
    return None


def train_problem(argv: list[str]) -> str | None:
    """What `rag-e2e train <argv>` would refuse before training, in one line; None if it composes."""
    from rag_e2e.errors import RagE2EError
    from rag_e2e.hydra_internals import get_args_parser
    from rag_e2e.launch import check_command_line

    args, _ = drop_placeholders([a for a in argv if a not in ("-v", "--verbose")])
    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit:
        return f"Hydra's command-line parser refuses {' '.join(args)!r}"
    try:
        check_command_line(parsed.overrides, multirun=parsed.multirun)
    except RagE2EError as err:
        return str(err)
    return None


def make_targets(makefile: str) -> set[str]:
    targets = set()
    for line in makefile.splitlines():
        rule = re.match(r"^([^\s#:=$][^:=]*?)\s*:(?!=)", line)
        if rule:
            targets |= set(rule.group(1).split())
    return targets - {".PHONY"}


def module_problem(name: str) -> str | None:
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        found = False
    return None if found else f"`python -m {name}`: no module {name}"


def pyproject_extras(pyproject: str) -> set[str]:
    table = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", table, re.M))


def path_problem(path: str) -> str | None:
    path = path.rstrip(".")
    if IGNORED_OUTPUTS.match(path) or path.split("#")[0] in NOT_REPO_PATHS:
        return None
    exists = any(REPO.glob(path)) if "*" in path else (REPO / path).exists()
    return None if exists else f"`{path}` does not exist in the repository"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(prose: str) -> set[str]:
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            seen[base] = seen.get(base, -1) + 1
    return {base if n == 0 else f"{base}-{i}" for base, n in seen.items() for i in range(n + 1)}


def link_problem(doc: Path, target: str) -> str | None:
    if re.match(r"^[a-z][\w+.-]*:", target):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    linked = (doc.parent / path).resolve() if path else doc
    if not linked.exists():
        return f"link target {target} does not exist"
    if anchor and linked.suffix == ".md" and anchor not in anchors(parse_markdown(linked.read_text(), "")[1]):
        return f"link target {target}: {linked.name} has no heading with anchor #{anchor}"
    return None


# ---- what the docs quote ---------------------------------------------------------------------------------------
@dataclass
class Quoted:
    subcommands: list[tuple[str, list[str]]]  # (where, argv after rag-e2e)
    train: dict[tuple[str, ...], list[str]]  # distinct train argv -> where each is quoted
    make: list[tuple[str, str]]
    modules: list[tuple[str, str]]
    extras: list[tuple[str, str]]
    paths: list[tuple[str, str]]
    links: list[tuple[str, Path, str]]  # (where, the document, target)
    text: str  # all of it, for names that must appear somewhere


def collect(files: list[Path], root: Path = REPO) -> Quoted:
    found = Quoted([], {}, [], [], [], [], [], "")
    for doc in files:
        name = doc.relative_to(root).as_posix() if doc.is_relative_to(root) else doc.name
        text = doc.read_text()
        found.text += text
        quotes, prose = parse_markdown(text, name)
        for quote in quotes:
            code = _code(quote)
            found.paths += [(quote.where, p) for p in PATH.findall(quote.text)]
            if not quote.command:
                continue
            for argv in rag_e2e_commands(quote):
                found.subcommands.append((quote.where, argv))
                if argv and argv[0] == "train":
                    found.train.setdefault(tuple(argv[1:]), []).append(quote.where)
            found.make += [(quote.where, t) for t in MAKE.findall(code)]
            found.modules += [(quote.where, m) for m in PYTHON_M.findall(code)]
            found.extras += [(quote.where, e) for group in EXTRA.findall(code) for e in group.split(",")]
            if re.fullmatch(r"\[[a-z]+\]", quote.text):  # `[serve]`: an extra named in prose
                found.extras.append((quote.where, quote.text[1:-1]))
        for no, line in enumerate(prose.splitlines(), 1):
            found.links += [(f"{name}:{no}", doc, target) for target in LINK.findall(line)]
    return found


DOCS = collect(DOC_FILES)


def _id(where: str, text: str) -> str:
    return f"{where} {text[:90]}"


# ---- the docs as shipped ---------------------------------------------------------------------------------------
def test_the_docs_quote_enough_to_check():
    assert {p.name for p in DOC_FILES} >= {"README.md", "usage.md", "experiments.md", "deployment.md"}
    assert len(DOCS.train) >= 20 and len(DOCS.paths) >= 100 and DOCS.make and DOCS.modules and DOCS.links


@pytest.mark.parametrize(("where", "argv"), DOCS.subcommands, ids=[_id(w, " ".join(a)) for w, a in DOCS.subcommands])
def test_every_rag_e2e_command_exists(where, argv):
    assert subcommand_problem(argv) is None, f"{where}: {subcommand_problem(argv)}"


@pytest.mark.parametrize("argv", list(DOCS.train), ids=[_id(w[0], " ".join(a)) for a, w in DOCS.train.items()])
def test_every_train_command_composes(argv):
    from rag_e2e.extras import EXTRAS, missing

    if "-m" in argv or "--multirun" in argv:
        absent = missing(*EXTRAS["sweeps"], "hydra_plugins.hydra_submitit_launcher")
        if absent:
            pytest.skip(f"the [sweeps] extra is not installed ({', '.join(absent)})")
    problem = train_problem(list(argv))
    assert problem is None, f"{', '.join(DOCS.train[argv])}: rag-e2e train {' '.join(argv)}: {problem}"


@pytest.mark.parametrize(("where", "target"), DOCS.make, ids=[_id(w, t) for w, t in DOCS.make])
def test_every_make_target_exists(where, target):
    assert target in make_targets(MAKEFILE.read_text()), f"{where}: `make {target}`: no such target in the Makefile"


@pytest.mark.parametrize(("where", "module"), DOCS.modules, ids=[_id(w, m) for w, m in DOCS.modules])
def test_every_python_module_is_importable(where, module):
    assert module_problem(module) is None, f"{where}: {module_problem(module)}"


@pytest.mark.parametrize(("where", "extra"), DOCS.extras, ids=[_id(w, e) for w, e in DOCS.extras])
def test_every_extra_is_in_pyproject(where, extra):
    extras = pyproject_extras((REPO / "pyproject.toml").read_text())
    assert extra in extras, f"{where}: [{extra}] is not an extra of pyproject.toml ({', '.join(sorted(extras))})"


@pytest.mark.parametrize(("where", "path"), DOCS.paths, ids=[_id(w, p) for w, p in DOCS.paths])
def test_every_quoted_path_exists(where, path):
    assert path_problem(path) is None, f"{where}: {path_problem(path)}"


@pytest.mark.parametrize(("where", "doc", "target"), DOCS.links, ids=[_id(w, t) for w, _, t in DOCS.links])
def test_every_relative_link_resolves(where, doc, target):
    assert link_problem(doc, target) is None, f"{where}: {link_problem(doc, target)}"


def _sweeps() -> list[str]:
    from rag_e2e.compose import config_dir
    from rag_e2e.experiments_source import group_options

    return group_options(config_dir())["sweep"]


@pytest.mark.parametrize("sweep", _sweeps())
def test_every_shipped_sweep_is_named_in_the_docs(sweep):
    assert f"sweep={sweep}" in DOCS.text or f"`{sweep}`" in DOCS.text, f"no page names sweep `{sweep}`"


def makefile_report_blocks(makefile: str) -> dict[str, tuple[str, str]]:
    """target -> (the file its `rag-e2e report ... readme=FILE [block=NAME]` rewrites, the block's start marker)."""
    blocks, target = {}, None
    for line in makefile.replace("\\\n", " ").splitlines():
        rule = re.match(r"^([\w.-]+)\s*:(?!=)", line)
        target = rule.group(1) if rule else target
        readme = re.search(r"\breadme=(\S+)", line) if line.startswith("\t") and "rag-e2e report" in line else None
        if readme:
            block = re.search(r"\bblock=(\S+)", line)
            blocks[target] = (readme.group(1), f"<!-- results:{block.group(1)}:start -->" if block
                              else "<!-- results:start -->")
    return blocks


@pytest.mark.parametrize("target", ["covidqa", "results"])
def test_the_blocks_make_rewrites_are_in_the_file_it_names(target):
    readme, start = makefile_report_blocks(MAKEFILE.read_text())[target]
    text = (REPO / readme).read_text()
    end = start.replace(":start", ":end")
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), \
        f"`make {target}` rewrites {readme} between {start} and {end}, which {readme} lacks"


def test_the_squad_results_block_is_on_the_experiments_page():
    text = (REPO / "docs" / "experiments.md").read_text()
    assert text.count("<!-- results:start -->") == 1 and text.count("<!-- results:end -->") == 1
    assert "<!-- results:start -->" not in (REPO / "README.md").read_text()


# ---- the checks find what is wrong -----------------------------------------------------------------------------
BOGUS = """\
# A page

```bash
rag-e2e trian experiment=tiny
rag-e2e train experiment=nope
rag-e2e train experiment=tiny trainer.max_stepz=10
rag-e2e train -m sweep=nope
make nope
python -m rag_e2e.nope
pip install -e '.[nope]'
```

It reads `experiments/nope.yaml` and links [a page](nope.md) and [a section](#nope), and [the top](#a-page).
"""


@pytest.fixture
def bogus(tmp_path) -> Quoted:
    page = tmp_path / "page.md"
    page.write_text(BOGUS)
    return collect([page], root=tmp_path)


def test_a_bogus_subcommand_is_reported_with_its_place(bogus):
    problems = [(w, subcommand_problem(a)) for w, a in bogus.subcommands if subcommand_problem(a)]
    assert problems == [("page.md:4", problems[0][1])] and "`rag-e2e trian` is not a command" in problems[0][1]


@pytest.mark.parametrize(("argv", "message"), [
    (("experiment=nope",), "no config `experiment=nope`"),
    (("experiment=tiny", "trainer.max_stepz=10"), "unknown key `trainer.max_stepz`"),
    (("-m", "sweep=nope"), "no config `sweep=nope`"),
])
def test_a_train_command_that_does_not_compose_is_reported(bogus, argv, message):
    assert bogus.train[argv] == [f"page.md:{5 + list(bogus.train).index(argv)}"]
    assert message in (train_problem(list(argv)) or "")


def test_placeholders_are_skipped_and_the_rest_still_composes():
    argv = ["-m", "experiment=covidqa/<system>", "run_dir=$RUN", "[overrides...]", "[steps=6", "k=2]", "..."]
    assert drop_placeholders(argv) == (["-m"], argv[1:])
    assert train_problem(["experiment=<name>", "trainer.max_steps=10"]) is None
    assert "unknown key `trainer.max_stepz`" in train_problem(["experiment=<name>", "trainer.max_stepz=10"])


def test_a_missing_target_module_extra_path_and_link_are_reported(bogus):
    assert bogus.make == [("page.md:8", "nope")] and "nope" not in make_targets(MAKEFILE.read_text())
    assert bogus.modules == [("page.md:9", "rag_e2e.nope")] and module_problem("rag_e2e.nope")
    assert bogus.extras == [("page.md:10", "nope")]
    assert "nope" not in pyproject_extras((REPO / "pyproject.toml").read_text())
    assert bogus.paths == [("page.md:13", "experiments/nope.yaml")] and "does not exist" in path_problem(
        "experiments/nope.yaml")
    problems = {t: link_problem(doc, t) for _, doc, t in bogus.links}
    assert "does not exist" in problems["nope.md"] and "no heading with anchor #nope" in problems["#nope"]
    assert problems["#a-page"] is None


def test_commands_in_text_blocks_and_comments_are_not_checked_but_their_paths_are(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```text\nrag-e2e nope  `make demo`  experiments/nope/\n```\n\n```bash\nls  # make nope\n```\n")
    found = collect([page], root=tmp_path)
    assert found.subcommands == [] and found.make == [("page.md:2", "demo")]
    assert found.paths == [("page.md:2", "experiments/nope/")]
