"""The Python half of every eryx guest (CPython and RustPython alike).

The Rust backend creates the module `_eryx_runtime`, injects the host functions and then
runs this file in it:

- `_host_invoke(name, arguments_json) -> (0, ok, text)` calls the world's `invoke` import and
  waits for its answer;
- `_host_start(name, arguments_json) -> (handle, ok, text)` starts an `invoke` call: handle 0
  when it answered at once (with `ok` and the text), else the handle of the pending call;
- `_host_timer(nanoseconds) -> (handle, ok, text)` starts a host timer the same way;
- `_host_wait(block) -> (handle, ok, text) | None` answers the next pending call to finish
  (waiting for one with `block`), None when none is pending (or none has finished yet);
- `_host_cancel(handle)` cancels a pending call;
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

# Each `execute` compiles its code under its own name, `<execute-N>`, so a traceback through
# a function defined by an earlier `execute` shows that execute's source line.
USER_FILENAME_PREFIX = "<execute-"
_execute_count = 0
# `ast.PyCF_ALLOW_TOP_LEVEL_AWAIT` (without importing `ast`).
_ALLOW_TOP_LEVEL_AWAIT = 0x2000


def _is_user_file(filename):
    return filename.startswith(USER_FILENAME_PREFIX)
_user_globals = __main__.__dict__

# What the runtime puts into the user's namespace, by name: `snapshot` skips a name only while
# it still holds the runtime's own object (a callback's name bound to a value of the user's is
# the user's), and `clear` forgets them all.
_machinery = {}
# What a fresh `__main__` holds (its dunders): `clear` brings it back, and the builtins as
# they are once this file has run (`_original_builtins`, below), whatever user code did.
_initial_main = dict(_user_globals)
_initial_dunders = set(_initial_main)


class CallbackError(Exception):
    """A host callback failed or does not exist; the message is the host's text."""


def invoke(name, /, **kwargs):
    """Calls the host callback `name` with keyword arguments and returns its JSON result.

    Every argument must be JSON: numbers (integers of any size; finite floats), strings,
    booleans, None, and lists and dicts (with string keys) of those.

    Inside a running asyncio event loop it returns an awaitable instead (`await invoke(...)`),
    so several callbacks can be pending at once (`asyncio.gather`) while the host runs them.
    """
    arguments = _arguments_json(name, kwargs)
    loop = _running_loop()
    if loop is not None:
        return _start(loop, name, arguments)
    _, ok, text = _host_invoke(name, arguments)
    return _answer(name, ok, text)


def _arguments_json(name, kwargs):
    try:
        arguments = json.dumps(kwargs, allow_nan=False, ensure_ascii=False)
        if _utf8(arguments) is not arguments:
            # Lone surrogates: JSON escapes would carry them as invalid text, so each string
            # goes as its backslash-escaped form instead.
            arguments = json.dumps(_escape_surrogates(kwargs), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        for key, value in kwargs.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as caught:
                raise CallbackError(
                    f"callback {name!r}: argument {key!r} cannot be sent to the host as JSON: {caught}"
                ) from None
        raise
    return arguments


def _answer(name, ok, text):
    if not ok:
        raise CallbackError(f"callback {name!r} failed: {text}")
    return json.loads(text)


class _Call:
    """A pending host call: its subtask handle (live while the call is here), the future of
    its result, the callback's name and the event loop that started it."""

    __slots__ = ("handle", "future", "name", "loop")

    def __init__(self, handle, future, name, loop):
        self.handle, self.future, self.name, self.loop = handle, future, name, loop


# The pending host calls of the running `execute`, by subtask handle. The host reuses a
# handle once its subtask is gone, so an entry is removed only by the call it belongs to.
_waiting = {}


def _running_loop():
    """The running asyncio event loop, if any (without importing asyncio)."""
    events = sys.modules.get("asyncio.events")
    return None if events is None else events._get_running_loop()


def _start(loop, name, arguments):
    """Starts a host call for code running in `loop`; answers a future of its result."""
    future = loop.create_future()
    if not isinstance(getattr(loop, "_selector", None), _HostSelector):
        # A loop that does not wait through this module (a custom one): the call is made
        # now, so the result is right, only not concurrent.
        _, ok, text = _host_invoke(name, arguments)
        _settle(future, name, ok, text)
        return future
    handle, ok, text = _host_start(name, arguments)
    if handle == 0:
        _settle(future, name, ok, text)
        return future
    call = _Call(handle, future, name, loop)
    _waiting[handle] = call
    future.add_done_callback(lambda done: _forget(call, done))
    return future


def _settle(future, name, ok, text):
    if future.done():
        return
    try:
        future.set_result(_answer(name, ok, text))
    except Exception as caught:
        future.set_exception(caught)


def _forget(call, future):
    """A future of a host call is done: when it was cancelled, so is the host call (unless
    it answered already, and its handle now belongs to another call)."""
    if _waiting.get(call.handle) is call:
        del _waiting[call.handle]
        if future.cancelled():
            _host_cancel(call.handle)


def _deliver(handle, ok, text):
    call = _waiting.pop(handle, None)
    if call is not None:
        _settle(call.future, call.name, ok, text)


def _cancel_calls_of(selector):
    """An event loop closes: the host calls it started and nobody awaited are cancelled (a
    later loop must not see their answers)."""
    for handle, call in list(_waiting.items()):
        if getattr(call.loop, "_selector", None) is selector:
            del _waiting[handle]
            _host_cancel(handle)


def _wait_for_host(timeout):
    """Waits until a pending host call finishes or `timeout` seconds pass (None: no limit;
    0: only collect what has finished), and settles the futures of the finished calls."""
    if timeout is None or timeout > 0:
        timer = 0
        if timeout is not None:
            timer, started, text = _host_timer(max(1, int(timeout * 1e9)))
            if not timer and not started:
                # No timer here (a synchronous export cannot wait): waiting would spin.
                raise RuntimeError(f"an event loop cannot wait here: {text}")
        finished = _host_wait(True) if timer or timeout is None else None
        if finished is not None and finished[0] != timer:
            _deliver(*finished)
            if timer:
                _host_cancel(timer)
    finished = _host_wait(False)
    while finished is not None:
        _deliver(*finished)
        finished = _host_wait(False)


def _escape_surrogates(value):
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        return {_escape_surrogates(key): _escape_surrogates(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_surrogates(item) for item in value]
    return value


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
    call._eryx_callback = name
    return call


def _install(name, value):
    _user_globals[name] = value
    _machinery[name] = value


def _is_node(value):
    """Whether `value` can hold dotted children: a namespace, or a callback wrapper (a
    name can be both a callback and the prefix of others)."""
    return isinstance(value, _Namespace) or hasattr(value, "_eryx_callback")


def _dots(entry):
    return entry[0].count(".")


def _install_callbacks():
    """Binds each host callback's name in `__main__` (on a sandbox's first `execute`, so on
    the path of every new sandbox: the schemas are not parsed here, only names and
    descriptions are needed)."""
    _install("invoke", invoke)
    _install("list_callbacks", list_callbacks)
    _install("CallbackError", CallbackError)
    # Shorter names first, so `x` is installed before `x.y` hangs from it.
    entries = [(name, description) for name, description, _ in _host_list_callbacks()]
    entries.sort(key=_dots)
    for name, description in entries:
        if "." not in name:
            if not name.isidentifier():
                # Not a Python name: reachable through `invoke(name, ...)` only.
                continue
            parent, parts = None, (name,)
        else:
            parts = name.split(".")
            if not all(part.isidentifier() for part in parts):
                continue
            parent = None
            for index, part in enumerate(parts[:-1]):
                holder = _user_globals if parent is None else parent.__dict__
                node = holder.get(part)
                if not _is_node(node):
                    node = _Namespace(".".join(parts[: index + 1]))
                    if parent is None:
                        _install(part, node)
                    else:
                        setattr(parent, part, node)
                parent = node
        wrapper = _make_wrapper(name, description)
        last = parts[-1]
        existing = (_user_globals if parent is None else parent.__dict__).get(last)
        if isinstance(existing, _Namespace):
            # `x.y` came first (or `x` is also a namespace): the wrapper takes its children.
            for child, value in vars(existing).items():
                if child != "_prefix":
                    setattr(wrapper, child, value)
        if parent is None:
            _install(last, wrapper)
        else:
            setattr(parent, last, wrapper)


_callbacks_installed = False


class _SelfPipelessEventLoops:
    """Makes asyncio's selector event loops work in the sandbox.

    A selector loop opens a socket pair (its "self-pipe") so other threads can wake it.
    The sandbox has no sockets and the guest has one thread, so the self-pipe is both
    impossible and unneeded: once `asyncio.selector_events` is first imported, its loop
    class is patched to run without one, and to wait through `_HostSelector` (so pending
    host calls are waited for with the loop's timers). This finder only watches for that
    import.
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
        spec.loader = _PatchingLoader(spec.loader, _adapt_selector_loops)
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


def _adapt_selector_loops(module):
    loop_class = module.BaseSelectorEventLoop

    def make_self_pipe(loop):
        loop._ssock = loop._csock = None

    loop_class._make_self_pipe = make_self_pipe
    loop_class._close_self_pipe = lambda loop: None
    original_init = loop_class.__init__

    def init(loop, selector=None):
        original_init(loop, _HostSelector() if selector is None else selector)

    loop_class.__init__ = init


# Longer than any execute may run: a wait this long ends by the execute's timeout.
_FOREVER_SECONDS = 24 * 3600.0


class _HostSelector:
    """The selector of the sandbox's event loops: where asyncio would wait for file
    descriptors, it waits for pending host calls too (settling their futures), with the
    loop's timeout (the next timer) as a host timer beside them."""

    def __init__(self):
        import selectors

        self._inner = selectors.DefaultSelector()

    def register(self, fileobj, events, data=None):
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._inner.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj):
        return self._inner.get_key(fileobj)

    def get_map(self):
        return self._inner.get_map()

    def close(self):
        _cancel_calls_of(self)
        self._inner.close()

    def select(self, timeout=None):
        if not _waiting and timeout is None and not self._inner.get_map():
            # Nothing can ever wake the loop (`await asyncio.Future()`, an event nobody sets):
            # it waits on a long host timer, so the execute's own timeout ends it (WASI has
            # nothing to poll, and an empty poll traps).
            _wait_for_host(_FOREVER_SECONDS)
            return []
        if not _waiting:
            return self._inner.select(timeout)
        ready = self._inner.select(0) if self._inner.get_map() else []
        _wait_for_host(0 if ready else timeout)
        return ready


sys.meta_path.insert(0, _SelfPipelessEventLoops())


def _supply_what_wasi_lacks():
    """What Python code expects of every platform and a WASI build of the interpreter may
    not define (RustPython's `signal` module on WASI has no signal numbers, and without
    `site` it has no `quit`)."""
    try:
        import signal
    except ImportError:
        signal = None
    if signal is not None and not hasattr(signal, "SIGINT"):
        # `asyncio.run` reads it to install (and later remove) its Ctrl-C handler.
        signal.SIGINT = 2
    if not hasattr(builtins, "quit") and hasattr(builtins, "exit"):
        builtins.quit = builtins.exit


_supply_what_wasi_lacks()
_original_builtins = dict(builtins.__dict__)


def _user_traceback(error):
    """Formats `error` without this file's frames, so line numbers are the user's."""
    tb = error.__traceback__
    while tb is not None and not _is_user_file(tb.tb_frame.f_code.co_filename):
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
    global _reseed_pending, _preinitialised
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
    _reset_main()
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


# Bound once: user code that replaces `io.FileIO` or `io.TextIOWrapper` does not change the
# streams of later executes (the classes themselves cannot be changed).
_FileIO, _TextIOWrapper = io.FileIO, io.TextIOWrapper


def _standard_stream(fd):
    """A fresh `sys.stdout` (fd 1) or `sys.stderr` (fd 2): a UTF-8 text wrapper whose
    `.buffer` is the file descriptor itself, so bytes, `os.write` and C code reach the host as
    they are written. stdout is line-buffered (a line goes out whole, in one write, when it
    ends: `print` costs one host call, not two); stderr writes through, as a native Python's
    does. Lone surrogates pass as their bytes (the host shows them escaped). Fresh per execute:
    what user code did to an earlier one (rebinding its methods) does not carry over."""
    raw = _FileIO(fd, "w", closefd=False)
    return _TextIOWrapper(raw, encoding="utf-8", errors="surrogatepass", line_buffering=True, write_through=fd != 1)


def _utf8(text):
    """`text` as valid UTF-8 text: what cannot be encoded (lone surrogates) is escaped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _report(frame, event):
    _host_report_trace(frame.f_lineno, json.dumps(event), "{}")


def _tracer(frame, event, arg):
    """`sys.settrace` hook: reports the events of the user's code only."""
    if not _is_user_file(frame.f_code.co_filename):
        return None
    if event == "line":
        _report(frame, {"type": "line"})
    elif event in ("call", "return"):
        _report(frame, {"type": event, "function": frame.f_code.co_name})
    elif event == "exception":
        kind, value, _ = arg
        _report(frame, {"type": "exception", "exception_type": kind.__name__, "message": _utf8(str(value))})
    return _tracer


def execute(code, trace=False):
    """Runs `code` in `__main__`; returns None, or the error (a traceback). What it prints
    goes to file descriptors 1 and 2, where the host captures it."""
    global _callbacks_installed, _reseed_pending, _execute_count
    if _reseed_pending:
        _reseed_pending = False
        _reseed()
    if not _callbacks_installed:
        _install_callbacks()
        _callbacks_installed = True
    try:
        stdout, stderr = _standard_stream(1), _standard_stream(2)
    except OSError as caught:
        return (
            f"the sandbox has no standard output or error stream any more ({caught}): an earlier "
            "execute closed file descriptor 1 or 2; clear the sandbox"
        )
    saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = stdout, stderr, stdout, stderr
    error = None
    try:
        _execute_count += 1
        filename = f"{USER_FILENAME_PREFIX}{_execute_count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        compiled = compile(code, filename, "exec", flags=_ALLOW_TOP_LEVEL_AWAIT)
        if trace:
            sys.settrace(_tracer)
        try:
            # Code with a top-level `await` evaluates to a coroutine: run it to its end.
            result = eval(compiled, _user_globals)
            if isinstance(result, types.CoroutineType):
                import asyncio

                asyncio.run(result)
        finally:
            if trace:
                sys.settrace(None)
    except SystemExit as caught:
        # `sys.exit()` and `sys.exit(0)` end the code successfully, as they end a program;
        # its output stays. Any other status is an error whose traceback names it.
        if caught.code is not None and caught.code != 0:
            error = _user_traceback(caught)
    except BaseException as caught:
        # KeyboardInterrupt and the rest too: the sandbox must survive them.
        error = _user_traceback(caught)
    finally:
        # What is left in this execute's streams (a line not ended yet), and in streams user
        # code put in their place (a buffered one), reaches the output before the execute ends.
        for stream in (stdout, stderr, sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved
        # Host calls still pending are cancelled when the export ends.
        _waiting.clear()
    return None if error is None else _utf8(error)


def _user_items():
    """The user's globals: every name of `__main__` but those still holding what a fresh
    `__main__` holds or what the runtime installed. A callback's or a dunder's name the user
    bound to a value of their own is the user's, carried or named like any other."""
    for name, value in list(_user_globals.items()):
        if name in _machinery and _machinery[name] is value:
            continue
        if name in _initial_main and _initial_main[name] is value:
            continue
        if name == "__builtins__":
            continue
        yield name, value


class _MainReferences(pickle.Pickler):
    """A pickler that notes classes and functions of `__main__` it meets: a value that needs
    one pickles as a reference to code defined in the sandbox, which another sandbox (or
    this one after `clear`) does not have."""

    def __init__(self, file):
        super().__init__(file)
        self.found = None

    def persistent_id(self, obj):
        if (
            self.found is None
            and isinstance(obj, (type, types.FunctionType))
            and getattr(obj, "__module__", None) == "__main__"
        ):
            self.found = getattr(obj, "__qualname__", "?")
        return None


def _carried(value):
    """The pickle of `value`, or None when it cannot travel to another sandbox."""
    if isinstance(value, types.ModuleType):
        return None
    buffer = io.BytesIO()
    pickler = _MainReferences(buffer)
    try:
        pickler.dump(value)
    except Exception:
        return None
    if pickler.found is not None:
        return None
    return buffer.getvalue()


SNAPSHOT_FORMAT = 1


def _snapshot_header():
    return {
        "format": SNAPSHOT_FORMAT,
        "implementation": sys.implementation.name,
        "python": list(sys.version_info[:2]),
    }


def snapshot():
    """Returns (bytes, skipped_names, None), or (None, None, error).

    Each value is pickled on its own, so a restore can load the others when one fails; a
    value that cannot be pickled, or that refers to code defined in the sandbox, is left out
    and named.
    """
    try:
        values, skipped = {}, []
        for name, value in _user_items():
            data = _carried(value)
            if data is None:
                skipped.append(name)
            else:
                values[name] = data
        snapshot = dict(_snapshot_header(), values=values)
        return pickle.dumps(snapshot), tuple(sorted(skipped)), None
    except BaseException as caught:
        return None, None, _user_traceback(caught)


def restore(data):
    """Merges a snapshot into `__main__` name by name; returns (names_not_restored, None) or
    (None, error) when the snapshot is refused as a whole."""
    try:
        snapshot = pickle.loads(data)
    except BaseException as caught:
        return None, f"restore-state: the snapshot does not load: {type(caught).__name__}: {caught}"
    here = _snapshot_header()
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        return None, (
            f"restore-state: not a snapshot of format {SNAPSHOT_FORMAT} "
            "(made by another version of the runtime, or not a snapshot)"
        )
    made_by = (snapshot.get("implementation"), snapshot.get("python"))
    if made_by != (here["implementation"], here["python"]):
        return None, (
            f"restore-state: the snapshot was made by {made_by[0]} {_version(made_by[1])}; "
            f"this sandbox runs {here['implementation']} {_version(here['python'])}"
        )
    failed = []
    for name, blob in snapshot.get("values", {}).items():
        try:
            _user_globals[name] = pickle.loads(blob)
        except BaseException:
            failed.append(name)
    return tuple(sorted(failed)), None


def _version(parts):
    return ".".join(str(part) for part in parts) if isinstance(parts, list) else "?"


def _reset_main():
    """`__main__` as fresh as at start-up, the original builtins back, and the callbacks to be
    installed again (from the host's current list) on the next `execute`."""
    global _callbacks_installed, _execute_count
    for name in list(_user_globals):
        if name not in _initial_dunders:
            del _user_globals[name]
    _user_globals.update(_initial_main)
    _user_globals["__builtins__"] = builtins
    current = builtins.__dict__
    for name in [name for name in current if name not in _original_builtins]:
        del current[name]
    current.update(_original_builtins)
    _machinery.clear()
    _callbacks_installed = False
    for filename in [filename for filename in linecache.cache if _is_user_file(filename)]:
        del linecache.cache[filename]
    _execute_count = 0
# `ast.PyCF_ALLOW_TOP_LEVEL_AWAIT` (without importing `ast`).
_ALLOW_TOP_LEVEL_AWAIT = 0x2000


def clear():
    """Removes every user global and brings back the builtins and the callbacks; returns
    None or an error text."""
    try:
        _reset_main()
        return None
    except BaseException as caught:
        return f"clear-state: {type(caught).__name__}: {caught}"
