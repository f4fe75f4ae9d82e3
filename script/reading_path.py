"""Which of the project's files a command loads, and how many code lines each holds.

    python script/reading_path.py -- train_rlhf.py --rlhf_type DPO --train_mode lora --max_steps 1 --output_dir /tmp/dpo
    python script/reading_path.py --all                # every Python file of the project, for comparison
    python script/reading_path.py --copy ../my_dpo -- train_rlhf.py --rlhf_type DPO --check   # copy what it uses

Runs the script in this process (`runpy`, with the given arguments), then lists every module it imported whose file
lies in the repository (tests excluded), with its lines and code lines: lines that hold code, not blank, comment or
docstring lines. A failing run (exit status != 0) is reported, and its files are listed all the same.

`--copy DEST` also copies those files into the new folder DEST, with the project modules they import inside
functions (found in their source; in the entry script only the chosen method's, which the run loaded) and
requirements.txt, so that DEST runs the same command on its own (docs/copy-a-script.md).
`--check` makes the run load no weights.
"""

from __future__ import annotations

import ast
import io
import os
import runpy
import shutil
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


def module_file(name: str) -> str | None:
    """The repository file of module `name` (`a.b` -> a/b.py or a/b/__init__.py), or None if it lies elsewhere."""
    base = os.path.join(ROOT, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def with_imported(files: list[str], script: str) -> list[str]:
    """`files` plus every repository module they import, at the top or inside a function, and the packages holding
    them (`__init__.py`), followed to the end. The entry `script` is read at the top level only: inside its functions
    it imports each method's own modules in that method's branch, and the run already loaded the branch it took.
    """
    todo, seen = list(files), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = os.path.relpath(os.path.dirname(path), ROOT)
        packages = [] if rel == "." else [os.path.join(ROOT, *rel.split(os.sep)[:i], "__init__.py")
                                          for i in range(1, len(rel.split(os.sep)) + 1)]
        names = []
        for node in import_statements(ast.parse(open(path, encoding="utf-8").read()), path == script):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found = [module_file(n) for n in names] + [p for p in packages if os.path.isfile(p)]
        todo += [f for f in found if f and f not in seen]
    return sorted(seen)


def import_statements(tree: ast.Module, top_level_only: bool) -> list[ast.stmt]:
    """The `import` statements of a parsed file; with `top_level_only`, those outside its functions."""
    if not top_level_only:
        return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo += ast.iter_child_nodes(node)
    return found


def copy_files(files: list[str], dest: str) -> None:
    """Copy `files` (repository paths) and requirements.txt into `dest`, keeping their relative paths."""
    for path in [*files, os.path.join(ROOT, "requirements.txt")]:
        target = os.path.join(dest, os.path.relpath(path, ROOT))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(path, target)


def report(files: list[str]) -> str:
    rows = [(os.path.relpath(f, ROOT), *code_lines(f)) for f in files]
    width = max([len(r[0]) for r in rows] + [4])
    lines = [f"{'file':<{width}}  {'lines':>6}  {'code':>6}"]
    lines += [f"{name:<{width}}  {n:>6}  {c:>6}" for name, n, c in rows]
    lines.append(f"{len(rows)} files, {sum(r[1] for r in rows)} lines, {sum(r[2] for r in rows)} code lines")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--all"]:
        files = [os.path.join(d, f) for d, _, names in os.walk(ROOT) for f in names]
        print(report(project_files(files)))
        return 0
    dest = None
    if argv[:1] == ["--copy"]:
        dest, argv = (argv[1] if len(argv) > 1 else ""), argv[2:]
        if not dest or dest.startswith("-"):
            print("error: --copy needs a folder: --copy DEST -- train_rlhf.py ...", file=sys.stderr)
            return 2
        if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
            print(f"error: --copy {dest} exists and is not an empty folder; nothing is overwritten. Use a new folder",
                  file=sys.stderr)
            return 2
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
    if dest is not None and status == 0:
        copied = with_imported(files, os.path.abspath(script))
        copy_files(copied, dest)
        print(f"[reading path] copied {len(copied)} files and requirements.txt to {dest}; there: "
              f"python {' '.join(argv)}", file=sys.__stdout__)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
