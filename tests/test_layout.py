"""What README's "How the code is laid out" names exists, and the client
stays light (``make lint`` checks the layers themselves with import-linter)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys

from tests.conftest import ROOT

IDENTIFIER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
PROJECT_PATH = re.compile(r"(minimmf|devtools|scripts|bench|tests|projects)/\S*|\w+\.py")
# words the section quotes that are not the project's code
NOT_CODE = {"mmf_run", "includes"}


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## How the code is laid out")
    return readme[start:readme.index("\n## ", start + 1)]


def defined_names() -> dict[str, set[str]]:
    """Every top-level function and class of the project's code, with each class's methods and attributes."""
    names: dict[str, set[str]] = {}
    files = [*ROOT.glob("minimmf/**/*.py"), *ROOT.glob("devtools/*.py"), ROOT / "handler.py"]
    for path in files:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                members = {child.name for child in getattr(node, "body", [])
                           if isinstance(child, (ast.FunctionDef, ast.ClassDef))}
                members |= {target.id for child in getattr(node, "body", []) if isinstance(child, ast.Assign)
                            for target in child.targets if isinstance(target, ast.Name)}
                names.setdefault(node.name, set()).update(members)
    return names


def test_every_module_and_function_the_layout_names_exists():
    names = defined_names()
    checked = 0
    for token in re.findall(r"`([^`]+)`", layout_section()):
        if PROJECT_PATH.fullmatch(token):
            assert (ROOT / token).exists(), f"README names {token}, which does not exist"
        elif token.startswith("minimmf."):
            importlib.import_module(token)
        elif IDENTIFIER.fullmatch(token) and token not in NOT_CODE and not re.search(r"\.(toml|yaml|json|csv|txt)$",
                                                                                      token):
            owner, _, member = token.partition(".")
            if member:
                assert member in names.get(owner, ()), f"README names {token}: no class {owner} with a {member}"
            else:
                assert owner in names or any(owner in members for members in names.values()), \
                    f"README names {token}: no function, class or method of that name in the code"
        else:
            continue
        checked += 1
    assert checked > 40, "the section names less code than it should: did its format change?"


def test_the_client_imports_no_torch():
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import request; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
