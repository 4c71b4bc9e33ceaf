"""stubtest of every native module's .pyi against the module as built and installed in the venv.

The modules are the ones CMakeLists.txt builds (its NATIVE_MODULES list), so adding or deleting a
native module needs no edit here. .ci/stubtest-allowlist.txt holds what Cython cannot express, each
entry with its reason; an entry that names a module no longer built is dropped, any other entry that
no longer matches fails the run (stubtest's "unused allowlist entry"), so the list cannot go stale.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".ci" / "stubtest-allowlist.txt"
# One NATIVE_MODULES entry: "<layer>.<name>=<path to the .pyx>".
_NATIVE_ENTRY = re.compile(r'"(\w+\.\w+)=[^"]+\.pyx"')
# An allowlist entry naming a native module: fastbook.<layer>._<name>, dots written plain or escaped.
_ENTRY_MODULE = re.compile(r"fastbook\\?\.(\w+)\\?\.(_\w+)(?:\\?\.|$)")


def native_modules(cmake: Path) -> list[str]:
    text = cmake.read_text()
    block = re.search(r"set\(NATIVE_MODULES(.*?)\)", text, re.S)
    if block is None:
        raise SystemExit(f"{cmake}: no set(NATIVE_MODULES ...) list")
    modules = [f"fastbook.{dotted}" for dotted in _NATIVE_ENTRY.findall(block.group(1))]
    if not modules:
        raise SystemExit(f"{cmake}: NATIVE_MODULES lists no <layer>.<name>=<pyx> entry")
    return modules


def allowlist_for(modules: list[str], lines: list[str]) -> list[str]:
    """The allowlist lines that apply: comments and entries naming no native module are kept;
    an entry naming one is kept only if that module is built."""
    built = set(modules)
    kept = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        named = _ENTRY_MODULE.match(entry)
        if named is None or f"fastbook.{named[1]}.{named[2]}" in built:
            kept.append(line)
    return kept


def main() -> int:
    modules = native_modules(ROOT / "CMakeLists.txt")
    lines = ALLOWLIST.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        allowlist = Path(tmp) / "allowlist.txt"
        allowlist.write_text("\n".join(allowlist_for(modules, lines)) + "\n")
        print(f"stubtest: {' '.join(modules)}", flush=True)
        # Run outside the work tree so the installed package (the built .so beside its .pyi) is the
        # one both imported and read, never src/.
        return subprocess.call(
            [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(allowlist), *modules], cwd=tmp
        )


if __name__ == "__main__":
    sys.exit(main())
