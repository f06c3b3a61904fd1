"""The guides are tested: their commands run, their links resolve, the flags they name exist.

(a) Every ```bash and ```python block of docs/getting-started.md and docs/how-to/*.md runs, in a
temporary folder, on tiny phantom data, except blocks marked ``<!-- illustrative: why -->`` on the
line before the fence (a GPU, TensorRT, a real data set or minutes). A ```yaml (or other) block
marked ``<!-- file: NAME -->`` is written to NAME first. `unet3plus ...` lines run in this process
through ``cli.main`` (one TensorFlow start for the whole file, not one per line); other shell lines
run in bash. The train guide runs first and its tiny run (``data/lits``, ``runs/liver``) is what the
other guides predict with, export and resume: it is trained once per module.
(b) Every relative link and #anchor in README.md and docs/**/*.md resolves (GitHub's anchor rules).
(c) Every --flag the docs name on a `unet3plus <command>` line exists in that command's parser.
Also: docs/reference/cli.md and config.md equal what docs/reference/make_cli.py makes now.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TRAIN_GUIDE = DOCS / "how-to" / "train-on-your-data.md"
RUN_PAGES = [DOCS / "getting-started.md", *sorted(p for p in (DOCS / "how-to").glob("*.md") if p != TRAIN_GUIDE)]
ALL_PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*(illustrative|file):\s*(.*?)\s*-->\s*$")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def blocks(page: Path) -> list[dict]:
    """The fenced blocks of ``page``: language, text, first line, and the mark on the line before."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        mark = MARK.match(lines[i - 1].strip()) if i else None
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        found.append(
            dict(
                lang=m.group(2),
                text="\n".join(lines[i + 1 : j]),
                line=i + 2,
                mark=mark.group(1) if mark else None,
                arg=mark.group(2) if mark else None,
            )
        )
        i = j + 1
    return found


def shell_commands(text: str) -> list[str]:
    """One command per line (a trailing backslash continues it); comments and blank lines dropped."""
    out, current = [], ""
    for line in text.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip() and not current.strip().startswith("#"):
            out.append(current.strip())
        current = ""
    return out


def run_unet3plus(argv: list[str]) -> tuple[int, str]:
    from keras_unet3plus import cli

    buffer, environ = io.StringIO(), dict(os.environ)
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # --version, --help
            rc = exc.code or 0
        finally:  # what a command sets for its process (TF_CPP_MIN_LOG_LEVEL) stays out of the next test
            os.environ.clear()
            os.environ.update(environ)
    return rc, buffer.getvalue()


def run_page(page: Path, folder: Path) -> None:
    """Run the page's blocks in ``folder``, in order; fail naming the page, line and output."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        for block in blocks(page):
            where = f"{_rel(page)}:{block['line']}"
            if block["mark"] == "illustrative":
                assert block["arg"], f"{where}: an illustrative block must say why"
                continue
            if block["mark"] == "file":
                Path(block["arg"]).write_text(block["text"] + "\n", encoding="utf-8")
                continue
            if block["lang"] == "python":
                exec(compile(block["text"], where, "exec"), {"__name__": "__docs__"})
            elif block["lang"] == "bash":
                for command in shell_commands(block["text"]):
                    if command.startswith("unet3plus "):
                        rc, output = run_unet3plus(shlex.split(command, comments=True)[1:])
                    else:
                        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
                        rc, output = done.returncode, done.stdout + done.stderr
                    assert rc == 0, f"{where}: `{command}` exited {rc}:\n{output[-3000:]}"
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The train guide run in a fresh folder: its phantom data sets and its tiny trained run.

    Under pytest-xdist the first worker to get here runs it in the run's shared temp folder and
    the others wait for it (a lock), so the guides train once however the tests are spread.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp("docs")
        run_page(TRAIN_GUIDE, folder)
        return folder
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "docs-workspace"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / ".done").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            run_page(TRAIN_GUIDE, shared)
            (shared / ".done").touch()
    return shared


def test_train_guide_runs(workspace):
    run = workspace / "runs" / "liver"
    for name in ("best.keras", "best.keras.unet3plus.json", "model.keras", "config.yaml", "log.csv", "split.json"):
        assert (run / name).is_file(), f"the train guide's run lacks {name}"
    for data in ("lits", "Task09_Spleen", "Dataset003_Liver", "dicom_cases", "mha_cases"):
        assert (workspace / "data" / data).is_dir(), f"the train guide did not write data/{data}"


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: p.name)
def test_guide_runs(page, workspace, tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(workspace, folder, symlinks=True)
    run_page(page, folder)


def test_readme_python_compiles():
    """The README's quick start builds the paper-size model (9 s): it is compiled here, and run by
    hand (its tiny twin in getting-started.md runs above)."""
    found = [b for b in blocks(ROOT / "README.md") if b["lang"] == "python"]
    assert found, "README.md has no python quick start"
    for block in found:
        compile(block["text"], f"README.md:{block['line']}", "exec")


def test_guides_mark_few_blocks_illustrative():
    """Illustrative blocks are the exception: every page that runs has blocks that run."""
    for page in [TRAIN_GUIDE, *RUN_PAGES]:
        found = [b for b in blocks(page) if b["lang"] in ("bash", "python")]
        ran = [b for b in found if b["mark"] != "illustrative"]
        if page.name != "distributed.md" and page.name != "reproduce-paper-tables.md":
            assert ran, f"{page.relative_to(ROOT)}: no block is run"


# --- (b) links and anchors -------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str, inline_code: bool = False) -> str:
    """The page without fenced blocks (a `# comment` in a shell block is no heading, a link in a
    block no link) and, unless ``inline_code``, without inline code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line if inline_code else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def github_anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives the page's headings (lower case, punctuation dropped, spaces to -,
    repeats numbered)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(page.read_text(encoding="utf-8"), inline_code=True).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link's text stays
        text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def broken_links(page: Path) -> list[str]:
    """Each relative link or #anchor of ``page`` that does not resolve, with why."""
    bad = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{_rel(page)}: ({target})"
        if not dest.exists():
            bad.append(f"{where}: {path} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in github_anchors(dest):
            bad.append(f"{where}: no heading #{anchor} in {_rel(dest)}")
    return bad


def test_links_and_anchors_resolve():
    bad = [line for page in ALL_PAGES for line in broken_links(page)]
    assert not bad, "\n".join(bad)


def test_link_check_catches_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-section) [ok](#page) [gone](missing.md) "
        "[no anchor](other.md#b-section) `[code](missing.md)`\n\n```bash\n[x](y.md)\n```\n"
    )
    assert [line.split(": ", 2)[-1] for line in broken_links(page)] == [
        "missing.md does not exist",
        "no heading #b-section in " + str(tmp_path / "other.md"),
    ]


def test_anchor_rules():
    """The anchor rule itself, on headings whose GitHub anchors are known."""
    page = DOCS / "explanation" / "architecture.md"
    assert "parameters-and-flops-against-the-paper-table-1" in github_anchors(page)
    assert "the-papers-comparison-on-the-phantom" in github_anchors(DOCS / "explanation" / "paper-comparison.md")
    assert "unet3plus-check-data" in github_anchors(DOCS / "reference" / "cli.md")


# --- (c) flags, and the generated reference ------------------------------------------------


def _make_cli():
    spec = importlib.util.spec_from_file_location("make_cli", DOCS / "reference" / "make_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMMAND = re.compile(r"(?:^|[\s/`(])unet3plus\s+([a-z][a-z-]*)")


def named_flags(page: Path) -> list[tuple[str, str, str]]:
    """``(command, flag, where)`` for each --flag after `unet3plus <command>` on a code line or in
    an inline code span (up to a comment, `;`, `&&` or `|` pipe)."""
    text = page.read_text(encoding="utf-8")
    snippets, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        pieces = [line] if fenced else re.findall(r"`([^`]*)`", line)
        snippets += [(p, f"{_rel(page)}:{n}") for p in pieces]
    found = []
    for snippet, where in snippets:
        for m in COMMAND.finditer(snippet):
            rest = re.split(r"\s#|;|&&|\s\|\s", snippet[m.end() :])[0]
            found += [(m.group(1), flag, where) for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)]
    return found


def test_docs_name_only_flags_that_exist():
    from keras_unet3plus import cli

    make_cli = _make_cli()
    known = {
        name: {s for a in make_cli.command_parser(name)[0]._actions for s in a.option_strings} for name in cli.COMMANDS
    }
    checked, bad = 0, []
    for page in ALL_PAGES:
        for command, flag, where in named_flags(page):
            if command not in known:
                continue  # `unet3plus --version`, or a word such as "unet3plus demo's"
            checked += 1
            if flag not in known[command]:
                bad.append(f"{where}: unet3plus {command} has no {flag}")
    assert not bad, "\n".join(bad)
    assert checked > 50, f"only {checked} flags found: the scan is broken"


def test_flag_scan_catches_a_wrong_flag(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `unet3plus train --data-dir D --epoch 3`.\n\n```bash\n"
        "unet3plus predict m.keras x -o y --skip-absnet  # not --this\n```\n"
    )
    found = {(c, f) for c, f, _ in named_flags(page)}
    assert found == {("train", "--data-dir"), ("train", "--epoch"), ("predict", "--skip-absnet")}


def test_cli_reference_is_generated_from_the_parser():
    make_cli = _make_cli()
    for name, render in make_cli.PAGES.items():
        committed = (DOCS / "reference" / name).read_text(encoding="utf-8")
        assert committed == render(), (
            f"docs/reference/{name} differs from the code: run .venv/bin/python docs/reference/make_cli.py"
        )
