"""The README, docs/*.md and configs/README.md cannot drift from the code.

- Every `dr-hf ...` command line they show (in bash blocks and in inline code) parses with
  `dr_hf.cli.build_parser()`, which runs nothing; `accelerate launch -m dr_hf.cli ...` and
  `scripts/train.py` lines are `dr-hf` lines too.
- Every `python scripts/X.py ...` line names a script that exists, and its flags parse with the
  script's `build_parser()` where it has one (`scripts/benchmark.py NAME ...` with the
  standalone benchmark's own).
- Every flag shown alone in inline code (`--crop_fov`) is a flag of some `dr-hf` command or
  script, or of another tool listed in OTHER_TOOLS_FLAGS.
- Every relative link and image resolves, `#anchors` included (GitHub's heading slugs).

The pages' convention for schematic lines: placeholders are values the parser accepts
(`outputs/run/best`, `DIR`, a number where a number goes); `[...]` marks an optional part and is
checked with its brackets removed; in `a|b` the first alternative is checked.
"""

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "configs" / "README.md", *(ROOT / "docs").glob("*.md")])
# Pages linked before they exist (written elsewhere); a link to any other missing file fails.
PAGES_TO_COME = {"docs/explanations.md"}
# Shell variables the pages use, with a value the parser accepts in their place.
SHELL_VARIABLES = {"$SLURM_ARRAY_TASK_ID": "0"}
# Flags of other tools that the pages show alone in inline code.
OTHER_TOOLS_FLAGS = {
    "--durations",  # pytest
    "--nproc_per_node",  # torchrun
    "--num_processes",  # accelerate launch
    "--num_machines",
    "--machine_rank",
    "--main_process_ip",
    "--multi_gpu",
    "--config_file",
}
SCRIPT_ALIASES = {  # scripts that are another command line under another name
    "scripts/train.py": ("dr-hf", ["train"]),
    "scripts/benchmark_gpu.sh": ("scripts/benchmark.py", ["gpu"]),
}
SCRIPT_RE = re.compile(r"^scripts/[\w/.-]+\.(py|sh)$")
FENCE_RE = re.compile(r"^(\s*)(```|~~~)(.*)$")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}


# ---------------------------------------------------------------- reading the pages


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def split_page(text: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """(fenced blocks as (line, language, body), prose lines as (line, text))."""
    blocks, prose = [], []
    fence, language, body, start = None, "", [], 0
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE_RE.match(line)
        if fence is None and match:
            fence, language, body, start = match.group(2), match.group(3).strip(), [], number
        elif fence is not None and line.strip() == fence:
            blocks.append((start, language, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append((number, line))
    return blocks, prose


def inline_spans(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line, text) of the prose's inline code spans; a span broken over lines is joined with a
    space, as Markdown renders it."""
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    spans = []
    for match in re.finditer(r"`([^`]+)`", text):
        if "\n\n" in match.group(1):
            continue
        index = next(i for i, start in enumerate(starts) if start > match.start()) - 1
        spans.append((prose[index][0], " ".join(match.group(1).split())))
    return spans


def logical_lines(body: str) -> list[str]:
    """A shell block's lines, `\\` continuations joined."""
    lines, current = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            lines.append(current + line)
            current = ""
    if current:
        lines.append(current)
    return lines


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: comments dropped, split at `&&`, `||`, `;` and
    `|` (so in `a|b` the first alternative is checked), `[...]` brackets removed."""
    line = re.sub(r"\[([^\[\]]*)\]", r" \1 ", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set("|&;"):
            commands.append(current)
            current = []
        else:
            current.append(SHELL_VARIABLES.get(token, token))
    commands.append(current)
    return [command for command in commands if command]


def shown_commands() -> list[tuple[str, list[str]]]:
    """Every shell command of every page, with where it stands (`page:line`)."""
    shown = []
    for page in PAGES:
        blocks, prose = split_page(page.read_text())
        for start, language, body in blocks:
            if language.lower() not in SHELL_LANGUAGES:
                continue
            for line in logical_lines(body):
                for command in shell_commands(line):
                    shown.append((f"{rel(page)}:{start}", command))
        for number, span in inline_spans(prose):
            if span.startswith(("dr-hf ", "python scripts/", "scripts/", "accelerate launch")):
                for command in shell_commands(span):
                    shown.append((f"{rel(page)}:{number}", command))
    return shown


# ---------------------------------------------------------------- checking a command line


@cache
def dr_hf_parser():
    """`build_parser()` with each command's parser built and taking whole flag names only
    (a page's `--num_proc` must not pass as an abbreviation of a renamed flag)."""
    from dr_hf.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.real().allow_abbrev = False
    return parser


def script_module(script: str):
    """The module of `scripts/X.py` (scripts/ is on the test path), or None for a shell script."""
    path = Path(script)
    if path.suffix != ".py":
        return None
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module(".".join(path.relative_to("scripts").with_suffix("").parts))


def parse_dr_hf(argv: list[str]) -> str | None:
    """Why `dr-hf argv` does not parse, or None. A bare `dr-hf COMMAND` only names a command."""
    from dr_hf.cli import COMMANDS

    if len(argv) == 1 and argv[0] in COMMANDS:
        return None
    return parse_with(dr_hf_parser(), argv)


def parse_with(parser, argv: list[str]) -> str | None:
    """Why `parser` refuses `argv` (the last line argparse printed), or None; `--help` passes.
    Abbreviated flags are refused."""
    parser.allow_abbrev = False
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:
            return None
        return (err.getvalue().strip().splitlines() or [f"exit {exit_.code}"])[-1]
    return None


def parse_script(script: str, argv: list[str]) -> str | None:
    """Why `script argv` does not parse, or None."""
    if script in SCRIPT_ALIASES:
        target, prefix = SCRIPT_ALIASES[script]
        return check_argv([target, *prefix, *argv])
    if not (ROOT / script).is_file():
        return f"{script} does not exist"
    module = script_module(script)
    if module is None or not hasattr(module, "build_parser"):
        return None
    standalone = getattr(module, "STANDALONE", ())
    if argv and argv[0] in standalone:
        if not (ROOT / "scripts" / "benchmarks" / f"{argv[0]}.py").is_file():
            return f"scripts/benchmarks/{argv[0]}.py does not exist"
        return parse_with(importlib.import_module(f"benchmarks.{argv[0]}").build_parser(), argv[1:])
    return parse_with(module.build_parser(), argv)


def check_argv(command: list[str]) -> str | None:
    """Why one simple shell command shown in the pages does not parse, or None (also for
    commands of other tools, which are not checked)."""
    for token in command:  # files of the repository the command names must exist
        if re.match(r"^(configs|accelerate_configs|scripts)/[\w/.-]+\.(yaml|py|sh)$", token):
            if not (ROOT / token).is_file() and token not in SCRIPT_ALIASES:
                return f"{token} does not exist"
    if command[0] == "dr-hf":
        return parse_dr_hf(command[1:])
    if "dr_hf.cli" in command and command[command.index("dr_hf.cli") - 1] == "-m":
        return parse_dr_hf(command[command.index("dr_hf.cli") + 1 :])
    for index, token in enumerate(command):
        if SCRIPT_RE.match(token):
            return parse_script(token, command[index + 1 :])
    return None


# ---------------------------------------------------------------- flags shown alone


@cache
def known_flags() -> frozenset[str]:
    """Every option string of every `dr-hf` command and of the scripts with a parser."""
    from dr_hf.cli import COMMANDS

    parsers = [command.parser() for command in COMMANDS.values()]
    for script in sorted((ROOT / "scripts").glob("*.py")):
        module = script_module(rel(script))
        if hasattr(module, "build_parser"):
            parsers.append(module.build_parser())
        for name in getattr(module, "STANDALONE", ()):
            parsers.append(importlib.import_module(f"benchmarks.{name}").build_parser())
    return frozenset(flag for parser in parsers for flag in parser._option_string_actions)


def shown_flags() -> list[tuple[str, str]]:
    shown = []
    for page in PAGES:
        _, prose = split_page(page.read_text())
        for number, span in inline_spans(prose):
            match = re.match(r"^(--[A-Za-z][\w-]*)", span)
            if match:
                shown.append((f"{rel(page)}:{number}", match.group(1)))
    return shown


# ---------------------------------------------------------------- links


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    _, prose = split_page(page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(out)


def page_links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    _, prose = split_page(page.read_text())
    links = []
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)
        for match in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            links.append((number, match.group(1)))
    return links


def link_problem(page: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    if path and not destination.exists():
        if destination.is_relative_to(ROOT) and rel(destination) in PAGES_TO_COME:
            return None
        return f"{path} does not exist"
    if anchor:
        if destination.suffix != ".md":
            return f"#{anchor} points into {path}, which is not a Markdown page"
        if anchor not in anchors(destination):
            return f"no heading gives #{anchor} in {rel(destination)}"
    return None


# ---------------------------------------------------------------- the tests


def test_the_pages_exist():
    names = {rel(page) for page in PAGES}
    assert {"README.md", "configs/README.md", "docs/patients.md"} <= names
    for page in ["data", "models", "training", "evaluation", "grading-rules", "deploying"]:
        assert f"docs/{page}.md" in names
    for page in ["research", "demo", "benchmarks", "development"]:
        assert f"docs/{page}.md" in names


def test_every_command_line_shown_parses():
    commands = shown_commands()
    assert sum(command[0] == "dr-hf" for _, command in commands) >= 50  # the extraction works
    failures = []
    for where, command in commands:
        problem = check_argv(command)
        if problem:
            failures.append(f"{where}: {shlex.join(command)}: {problem}")
    assert not failures, "\n".join(failures)


def test_every_flag_shown_alone_exists():
    known = known_flags() | OTHER_TOOLS_FLAGS
    missing = [f"{where}: {flag}" for where, flag in shown_flags() if flag not in known]
    assert not missing, "\n".join(missing)


def test_every_relative_link_resolves():
    failures = []
    for page in PAGES:
        for number, target in page_links(page):
            problem = link_problem(page, target)
            if problem:
                failures.append(f"{rel(page)}:{number}: ({target}) {problem}")
    assert not failures, "\n".join(failures)


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 420
    first_screen = "\n".join(lines[:60])
    assert "pip install" in first_screen and "pipeline(" in first_screen
    assert "dr-hf train --config configs/quickstart.yaml" in first_screen


def test_the_readme_test_command_is_the_ci_command():
    """`.ci/run` runs the README's test command: the pytest call of each is the same."""
    ci = (ROOT / ".ci" / "run").read_text()
    (ci_pytest,) = re.findall(r"^\s*(python -m pytest[^\n]*)$", ci, flags=re.M)
    blocks, _ = split_page((ROOT / "README.md").read_text())
    readme_pytest = [
        command
        for _, language, body in blocks
        if language in SHELL_LANGUAGES
        for line in logical_lines(body)
        for command in shell_commands(line)
        if command[:3] == ["python", "-m", "pytest"]
    ]
    assert readme_pytest, "the README shows no `python -m pytest` command"
    assert shlex.join(readme_pytest[0]) == ci_pytest.strip()


def test_the_configs_table_holds_each_shipped_files_keys_and_values():
    import yaml

    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (ROOT / "configs" / "README.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    header = next(
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (ROOT / "configs" / "README.md").read_text().splitlines()
        if line.startswith("| Key |")
    )
    files = header[2:]
    assert sorted(files) == sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))
    table = {
        row[0].strip("`"): dict(zip(files, row[2:])) for row in rows if len(row) == len(header)
    }
    for name in files:
        values = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        for key, value in values.items():
            assert key in table, f"configs/README.md: no row for {key} ({name}.yaml sets it)"
            assert yaml.safe_load(table[key][name].strip("`")) == value, f"{name}.yaml: {key}"
        for key, cells in table.items():
            if cells[name] != "-":
                assert key in values, f"configs/README.md: {name}.yaml does not set {key}"


@pytest.mark.slow
def test_the_readme_pipeline_snippet_grades_a_photograph(
    trained_run, synthetic_dir, tmp_path, monkeypatch
):
    """The front page's Python, run as written, where its two paths are a trained model folder
    and a synthetic photograph."""
    blocks, _ = split_page((ROOT / "README.md").read_text())
    snippet = next(body for _, lang, body in blocks if lang == "python" and "pipeline(" in body)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "quickstart").symlink_to(trained_run[0])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic").symlink_to(synthetic_dir)
    namespace, printed = {}, io.StringIO()
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result["grade"] in range(5) and result["label"] in result["probabilities"]
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert isinstance(result["referable"], bool)
    assert printed.getvalue().startswith(f"{result['grade']} {result['label']}")


# ---------------------------------------------------------------- the checks can fail


@pytest.mark.parametrize(
    "line",
    [
        "dr-hf train --config configs/quickstart.yaml --no_such_flag 1",
        "dr-hf predict --model outputs/run/best --grade-rule sideways photos/",
        "dr-hf nonsense --model x",
        "dr-hf train --config configs/missing.yaml",
        "dr-hf prepare --data_dir d --output o --num_pro 4",  # an abbreviation of --num_proc
        "accelerate launch -m dr_hf.cli cv --folds five",
        "python scripts/benchmark.py --sections no_such_section",
        "python scripts/benchmark.py onnx --no-such-flag",
        "python scripts/missing.py",
    ],
)
def test_a_wrong_command_line_is_caught(line):
    (command,) = shell_commands(line)
    assert check_argv(command) is not None


def test_the_extraction_reads_continuations_chains_and_brackets():
    body = "dr-hf cv --config configs/quickstart.yaml \\\n    --folds 5  # five\n"
    (line,) = logical_lines(body)
    assert shell_commands(line) == [
        ["dr-hf", "cv", "--config", "configs/quickstart.yaml", "--folds", "5"]
    ]
    chained = shell_commands("pip install -e . && dr-hf predict --model m [--tta] x.png")
    assert chained == [
        ["pip", "install", "-e", "."],
        ["dr-hf", "predict", "--model", "m", "--tta", "x.png"],
    ]
    assert check_argv(chained[1]) is None
    spans = inline_spans([(1, "see `dr-hf predict"), (2, "--tta x.png` and `--crop_fov`")])
    assert spans == [(1, "dr-hf predict --tta x.png"), (2, "--crop_fov")]


def test_a_broken_link_is_caught(tmp_path):
    page = ROOT / "docs" / "data.md"
    assert link_problem(page, "models.md") is None
    assert link_problem(page, "no_such_page.md") is not None
    assert link_problem(page, "models.md#no-such-heading") is not None
    assert link_problem(page, "#no-such-heading") is not None
    assert link_problem(page, "https://example.org/x") is None
    assert github_slug("Deploying without PyTorch (ONNX)") == "deploying-without-pytorch-onnx"
    assert github_slug("`dr-hf train`, and `--flags`") == "dr-hf-train-and---flags"
