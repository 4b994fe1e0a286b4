"""The Python half of every eryx guest (CPython and RustPython alike).

The Rust backend creates the module `_eryx_runtime`, injects four host functions and then
runs this file in it:

- `_host_invoke(name, arguments_json) -> (ok, text)` calls the world's `invoke` import;
- `_host_list_callbacks() -> [(name, description, parameters_schema_json), ...]`;
- `_host_report_trace(lineno, event_json, context_json)`;
- `_host_finish_preinit() -> bool` resets the WASI state a snapshot must not keep (once).

The backend then calls `execute`, `snapshot`, `restore` and `clear` below. Each of them
reports failures as values, never by raising, so the Rust side only converts results.
"""

import builtins
import io
import json
import linecache
import pickle
import sys
import traceback
import types

import __main__

USER_FILENAME = "<string>"
_user_globals = __main__.__dict__

# Names the runtime puts into the user's namespace; `clear` keeps them and `snapshot`
# skips them.
_machinery_names = set()
# The dunder names every fresh `__main__` has; `clear` keeps them.
_initial_dunders = {name for name in _user_globals if name.startswith("__")}


class CallbackError(Exception):
    """A host callback failed or does not exist; the message is the host's text."""


def invoke(name, **kwargs):
    """Calls the host callback `name` with keyword arguments and returns its JSON result."""
    ok, text = _host_invoke(name, json.dumps(kwargs))
    if not ok:
        raise CallbackError(f"callback {name!r} failed: {text}")
    return json.loads(text)


def list_callbacks():
    """Lists the host's callbacks as dicts: name, description, parameters_schema."""
    callbacks = []
    for name, description, schema_json in _host_list_callbacks():
        try:
            schema = json.loads(schema_json) if schema_json else {}
        except ValueError:
            schema = {}
        callbacks.append(
            {"name": name, "description": description, "parameters_schema": schema}
        )
    return callbacks


class _Namespace:
    """Holds the callbacks under a dotted prefix, so `http.get(url=...)` works."""

    def __init__(self, prefix):
        self._prefix = prefix

    def __repr__(self):
        return f"<callback namespace {self._prefix!r}>"


def _make_wrapper(name, description):
    def call(**kwargs):
        return invoke(name, **kwargs)

    call.__name__ = name.rsplit(".", 1)[-1]
    call.__qualname__ = name
    call.__doc__ = description
    return call


def _install(name, value):
    _user_globals[name] = value
    _machinery_names.add(name)


def _install_callbacks():
    _install("invoke", invoke)
    _install("list_callbacks", list_callbacks)
    _install("CallbackError", CallbackError)
    for callback in list_callbacks():
        parts = callback["name"].split(".")
        if not all(part.isidentifier() for part in parts):
            continue
        wrapper = _make_wrapper(callback["name"], callback["description"])
        if len(parts) == 1:
            _install(parts[0], wrapper)
            continue
        head = _user_globals.get(parts[0])
        if not isinstance(head, _Namespace):
            head = _Namespace(parts[0])
            _install(parts[0], head)
        node = head
        for index, part in enumerate(parts[1:-1], start=2):
            child = getattr(node, part, None)
            if not isinstance(child, _Namespace):
                child = _Namespace(".".join(parts[:index]))
                setattr(node, part, child)
            node = child
        setattr(node, parts[-1], wrapper)


_callbacks_installed = False


class _SelfPipelessEventLoops:
    """Makes asyncio's selector event loops work in the sandbox.

    A selector loop opens a socket pair (its "self-pipe") so other threads can wake it.
    The sandbox has no sockets and the guest has one thread, so the self-pipe is both
    impossible and unneeded: once `asyncio.selector_events` is first imported, its loop
    class is patched to run without one. This finder only watches for that import.
    """

    def find_spec(self, name, path, target=None):
        if name != "asyncio.selector_events":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        # A wrapping loader rather than a patched one: the original loader may be shared
        # by other modules (RustPython's frozen-module importer is a class).
        spec.loader = _PatchingLoader(spec.loader, _drop_self_pipe)
        return spec


class _PatchingLoader:
    """Runs `loader` and then `patch(module)`."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._patch(module)


def _drop_self_pipe(module):
    loop_class = module.BaseSelectorEventLoop

    def make_self_pipe(loop):
        loop._ssock = loop._csock = None

    loop_class._make_self_pipe = make_self_pipe
    loop_class._close_self_pipe = lambda loop: None


sys.meta_path.insert(0, _SelfPipelessEventLoops())


def _user_traceback(error):
    """Formats `error` without this file's frames, so line numbers are the user's."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != USER_FILENAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip("\n")


# Set by `_preinit`: the instance is a snapshot's copy, so state that must differ per
# sandbox is renewed before the first user code runs.
_reseed_pending = False
_preinitialised = False


def _preinit(modules):
    """Build time only: imports `modules` and leaves the instance ready to be snapshotted.

    The build's pre-initialisation step calls this through `execute` and then snapshots the
    instance; every sandbox starts from that snapshot. `__main__` is left as fresh as before
    (the callbacks are installed per sandbox, on its first `execute`), and the WASI state that
    must not be captured is reset last.
    """
    global _callbacks_installed, _reseed_pending, _preinitialised
    if _preinitialised:
        raise RuntimeError("this instance is pre-initialised already")
    failed = []
    for name in modules:
        try:
            __import__(name)
        except ImportError as caught:
            failed.append(f"{name} ({caught})")
    if failed:
        raise ImportError("pre-initialisation could not import " + ", ".join(failed))
    for name in list(_user_globals):
        if name not in _initial_dunders:
            del _user_globals[name]
    _machinery_names.clear()
    _callbacks_installed = False
    linecache.cache.pop(USER_FILENAME, None)
    import gc

    gc.collect()
    _reseed_pending = True
    _preinitialised = True
    _host_finish_preinit()


def _reseed():
    """Renews what a snapshot would otherwise give every sandbox alike: the state of the
    `random` module's generator (imported at pre-initialisation, it was seeded then)."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()


def execute(code):
    """Runs `code` in `__main__`; returns (stdout, stderr, error_or_None)."""
    global _callbacks_installed, _reseed_pending
    if _reseed_pending:
        _reseed_pending = False
        _reseed()
    if not _callbacks_installed:
        _install_callbacks()
        _callbacks_installed = True
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    error = None
    try:
        linecache.cache[USER_FILENAME] = (
            len(code),
            None,
            code.splitlines(True),
            USER_FILENAME,
        )
        compiled = compile(code, USER_FILENAME, "exec")
        exec(compiled, _user_globals)
    except SystemExit as caught:
        # `sys.exit()` and `sys.exit(0)` end the code successfully, as they end a program;
        # its output stays. Any other status is an error whose traceback names it.
        if caught.code is not None and caught.code != 0:
            error = _user_traceback(caught)
    except BaseException as caught:
        # KeyboardInterrupt and the rest too: the sandbox must survive them.
        error = _user_traceback(caught)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        sys.stdout, sys.stderr = saved
    return stdout.getvalue(), stderr.getvalue(), error


def _user_items():
    for name, value in list(_user_globals.items()):
        if name in _machinery_names or name in _initial_dunders:
            continue
        if name.startswith("__") and name.endswith("__"):
            continue
        yield name, value


def _survives_pickling(value):
    # Functions and classes defined by the user pickle by reference to `__main__`; they
    # would not load again after `clear`, so they are not state that a snapshot can carry.
    if isinstance(value, (types.FunctionType, type)) and getattr(
        value, "__module__", None
    ) == "__main__":
        return False
    if isinstance(value, types.ModuleType):
        return False
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def snapshot():
    """Returns (bytes, None) with the picklable user globals, or (None, error)."""
    try:
        state = {name: value for name, value in _user_items() if _survives_pickling(value)}
        return pickle.dumps(state), None
    except BaseException as caught:
        return None, _user_traceback(caught)


def restore(data):
    """Merges a snapshot into `__main__`; returns None or an error text."""
    try:
        state = pickle.loads(data)
    except BaseException as caught:
        return f"restore-state: the snapshot does not load: {type(caught).__name__}: {caught}"
    if not isinstance(state, dict):
        return "restore-state: the snapshot is not a namespace"
    _user_globals.update(state)
    return None


def clear():
    """Removes every user global; builtins and the callback machinery stay."""
    for name, _ in list(_user_items()):
        del _user_globals[name]
    _user_globals["__builtins__"] = builtins
