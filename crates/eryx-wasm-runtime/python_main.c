// The program's `main` in `python-cpython.wasm`, the command form of the CPython guest:
// CPython's own. Its `_start` (crates/eryx-guest-abi/command_entry.c) calls wasi-libc's
// `__main_void`, which reads the program's arguments from WASI and calls this.
int Py_BytesMain(int argc, char **argv);

int __main_argc_argv(int argc, char **argv) {
    return Py_BytesMain(argc, argv);
}
