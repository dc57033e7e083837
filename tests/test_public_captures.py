"""The public captures are optional: found through one helper, inside the tests only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from public_captures import ENV, public_capture, public_dir

TESTS = Path(__file__).resolve().parent


def test_missing_capture_skips_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "absent"))
    assert public_dir() == tmp_path / "absent"
    with pytest.raises(pytest.skip.Exception, match=r"hep_pcap\.pcap not found in .*absent"):
        public_capture("hep_pcap.pcap")


def test_present_capture_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.pcap").write_bytes(b"")
    monkeypatch.setenv(ENV, str(tmp_path))
    assert public_capture("x.pcap") == tmp_path / "x.pcap"


def _marks(node: ast.FunctionDef) -> set[str]:
    # The names of the pytest.mark.<name> decorators of a test function.
    out = set()
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute):
            out.add(target.attr)
    return out


def _calls_public_capture(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "public_capture"
        for n in ast.walk(node)
    )


@pytest.mark.parametrize(
    "module",
    sorted(p for p in TESTS.rglob("*.py") if p.name != "public_captures.py"),
    ids=lambda p: str(p.relative_to(TESTS)),
)
def test_public_captures_only_through_the_helper(module: Path) -> None:
    text = module.read_text()
    folder = '"fixtures' + '-public"'  # as a string literal: a path being built
    assert folder not in text, "name the captures' folder only in tests/public_captures.py"
    tree = ast.parse(text)
    e2e_module = "pytestmark = pytest.mark.e2e" in text
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.FunctionDef)
            and node.name.startswith("test_")
            and _calls_public_capture(node)
            and not e2e_module
        ):
            # make unit hides the captures; make e2e runs `e2e or public`
            assert _marks(node) & {"public", "e2e"}, f"{node.name}: mark it public"
