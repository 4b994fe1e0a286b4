"""Build step (`eryx-tools bytecode`): writes the bytecode of every module under the directory
given, run by the CPython command form itself (the interpreter that will read it).

Each `__pycache__/<name>.cpython-314.pyc` is unchecked-hash bytecode (PEP 552): the importer
uses it without comparing the source's time or hash, so the bytes depend on the source alone.
Files are visited in sorted order with a fixed hash seed (the build sets PYTHONHASHSEED=0), so
the interpreter does the same work every time and writes the same bytes (marshal's
back-references depend on what else is alive). Prints how many modules it compiled."""

import importlib._bootstrap_external as _external
import importlib.util
import os
import sys

root = sys.argv[1]
written = 0
refused = []
for directory, subdirectories, files in os.walk(root):
    subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
    for name in sorted(files):
        if not name.endswith(".py"):
            continue
        path = os.path.join(directory, name)
        with open(path, "rb") as file:
            source = file.read()
        try:
            code = compile(source, path, "exec", dont_inherit=True, optimize=0)
        except SyntaxError as error:
            refused.append(f"{path}: {error}")
            continue
        data = _external._code_to_hash_pyc(code, importlib.util.source_hash(source), False)
        cached = importlib.util.cache_from_source(path)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        descriptor = os.open(cached, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # A write may take less than it was given (WASI hosts cut large writes).
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
        finally:
            os.close(descriptor)
        written += 1
for line in refused:
    print(f"not compiled (kept as source only): {line}", file=sys.stderr)
print(written)
