"""Guardrails for the package layout (STYLE.md §9)."""

from __future__ import annotations

import configparser
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP = {"smsgw": "smsgw", "protocol": "smsgw.protocol", "adapters": "smsgw.adapters"}


def declared_packages() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}


def package_folders() -> set[str]:
    found = set()
    for folder, dotted in TOP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((dotted, *rel)))
    return found


def test_packages_list_matches_package_folders() -> None:
    """setup.cfg's packages list names exactly the folders that hold an __init__.py."""
    assert declared_packages() == package_folders()


def test_package_dir_maps_protocol_and_adapters_under_smsgw() -> None:
    """protocol/ and adapters/ install as smsgw.protocol and smsgw.adapters, never top-level."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mapping = dict(
        (k.strip(), v.strip())
        for k, v in (line.split("=") for line in cfg["options"]["package_dir"].splitlines() if "=" in line)
    )
    assert mapping == {"smsgw": "smsgw", "smsgw.protocol": "protocol", "smsgw.adapters": "adapters"}


def test_imports_always_go_through_smsgw() -> None:
    """No module imports `protocol` or `adapters` as a top-level package."""
    bad = re.compile(r"^\s*(from|import)\s+(protocol|adapters)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in (*TOP, "tests", "scripts")
                 for p in (ROOT / folder).rglob("*.py") if bad.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_no_tests_init_and_no_root_conftest() -> None:
    """Neither tests/__init__.py nor a root conftest.py puts the checkout on sys.path."""
    assert not (ROOT / "tests" / "__init__.py").exists()
    assert not (ROOT / "conftest.py").exists()
