"""psyche_client/_core.pyi matches the compiled binding, name for name.

The stub is written by hand (pyo3 does not generate one); this test fails when the two drift:
every public module name, class member and enum member the stub declares exists in `_core`,
and every public one `_core` has is declared in the stub. Stub-only helpers start with `_`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from psyche_client import _core

STUB = Path(_core.__file__).with_name("_core.pyi")


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def declared(body: list[ast.stmt]) -> set[str]:
    """Names a module or class body declares (functions, classes, annotated names)."""
    out: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def stub_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in stub_tree().body if isinstance(n, ast.ClassDef)}


def stub_members(name: str, classes: dict[str, ast.ClassDef]) -> set[str]:
    """Members of a stub class, with those of its stub bases."""
    node = classes[name]
    out = declared(node.body)
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            out |= stub_members(base.id, classes)
    return out


def test_module_names_match() -> None:
    in_stub = {n for n in declared(stub_tree().body) if not n.startswith("_")}
    in_module = {n for n in vars(_core) if not n.startswith("_")}
    assert sorted(in_stub - in_module) == [], "declared in _core.pyi but missing in _core"
    assert sorted(in_module - in_stub) == [], "in _core but not declared in _core.pyi"


def test_class_members_match() -> None:
    classes = stub_classes()
    for name in classes:
        if name.startswith("_"):
            continue
        cls = getattr(_core, name)
        members = stub_members(name, classes)
        # The base declares `name` and `code`; each concrete error class carries them.
        probe = _core.WrongPhase if cls is _core.CoordinatorError else cls
        missing = sorted(m for m in members if not hasattr(probe, m))
        assert missing == [], f"{name}: declared in _core.pyi but missing: {missing}"
        if issubclass(cls, BaseException):
            public = {m for m in ("name", "code") if m in vars(cls)}
        else:
            public = {m for m in vars(cls) if not m.startswith("_")}
        extra = sorted(public - members)
        assert extra == [], f"{name}: in _core but not declared in _core.pyi: {extra}"


def test_enum_members_are_the_cores() -> None:
    classes = stub_classes()
    for name in ("Phase", "ClientState", "RoundKind", "Unhealthy", "TickOutcome", "ModelKind"):
        cls = getattr(_core, name)
        stub = [
            n.target.id
            for n in classes[name].body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        ]
        assert [m.name for m in cls.members()] == stub, name
        for m in cls.members():
            assert getattr(cls, m.name) == m and cls.from_name(m.name) == m
            assert str(m) == m.name == f"{m}" and repr(m) == f"{name}.{m.name}"
            assert hash(m) == hash(getattr(cls, m.name))


def test_enums_refuse_string_comparison() -> None:
    with pytest.raises(TypeError, match="Phase.Finished"):
        _ = _core.Phase.Finished == "Finished"
    assert _core.Phase.Finished != _core.Phase.Paused
    assert _core.Phase.Finished != 7


def test_error_messages_state_the_rule() -> None:
    cfg = _core.Config(min_clients=0)
    try:
        cfg.validate()
    except _core.ConfigMinClients as e:
        assert str(e) == "min_clients must be ≥ 1 and ≤ max_clients"
        assert e.name == "ConfigMinClients" and _core.error_message(e.code) == str(e)
    else:
        raise AssertionError("validate accepted min_clients=0")
