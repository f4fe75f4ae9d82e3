"""Which of the project's files a command loads, and how many code lines each holds.

    python script/reading_path.py -- train_rlhf.py --rlhf_type DPO --train_mode lora --max_steps 1 --output_dir /tmp/dpo
    python script/reading_path.py --all                # every Python file of the project, for comparison

Runs the script in this process (`runpy`, with the given arguments), then lists every module it imported whose file
lies in the repository (tests excluded), with its lines and code lines: lines that hold code, not blank, comment or
docstring lines. A failing run (exit status != 0) is reported, and its files are listed all the same.
"""

from __future__ import annotations

import ast
import io
import os
import runpy
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_lines(path: str) -> tuple[int, int]:
    """`(lines, code lines)` of a Python file: code lines hold a token that is not a comment or a docstring."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    code = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            code.update(line for line in range(token.start[0], token.end[0] + 1) if line not in docstrings)
    return source.count("\n"), len(code)


def project_files(paths) -> list[str]:
    """The paths under the repository root, tests and this script left out, sorted."""
    keep = []
    for path in paths:
        path = os.path.abspath(path)
        rel = os.path.relpath(path, ROOT)
        outside = rel.startswith(("..", "tests" + os.sep, ".venv"))
        if path.endswith(".py") and os.path.isfile(path) and not outside and path != os.path.abspath(__file__):
            keep.append(path)
    return sorted(set(keep))


def report(files: list[str]) -> str:
    rows = [(os.path.relpath(f, ROOT), *code_lines(f)) for f in files]
    width = max([len(r[0]) for r in rows] + [4])
    lines = [f"{'file':<{width}}  {'lines':>6}  {'code':>6}"]
    lines += [f"{name:<{width}}  {n:>6}  {c:>6}" for name, n, c in rows]
    lines.append(f"{len(rows)} files, {sum(r[1] for r in rows)} lines, {sum(r[2] for r in rows)} code lines")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--all"]:
        files = [os.path.join(d, f) for d, _, names in os.walk(ROOT) for f in names]
        print(report(project_files(files)))
        return 0
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("error: give the command to run after --, e.g. python script/reading_path.py -- train_rlhf.py "
              "--rlhf_type DPO ... (or --all)", file=sys.stderr)
        return 2
    script = os.path.join(ROOT, argv[0]) if not os.path.isabs(argv[0]) else argv[0]
    if not os.path.isfile(script):
        scripts = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
        print(f"error: no such script {argv[0]}; the entry scripts are {', '.join(scripts)}", file=sys.stderr)
        return 2
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, ROOT)
    status = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    files = project_files(getattr(m, "__file__", None) or "" for m in list(sys.modules.values()))
    print(("" if status == 0 else f"[reading path] the run exited with status {status}\n") + report(files),
          file=sys.__stdout__)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
