// The entry point of `python-cpython.wasm`, the command form of the CPython guest: CPython's
// own `main`. wasi-libc's `__main_void` reads the program's arguments from WASI and calls
// `__main_argc_argv`; the library constructors have already run (the component's linker runs
// them at instantiation), so `_start` only has to pass the exit status on (to the command's
// own `exit`, crates/eryx-guest-abi/command_exit.c).
#include <stdlib.h>

int Py_BytesMain(int argc, char **argv);
int __main_void(void);

int __main_argc_argv(int argc, char **argv) {
    return Py_BytesMain(argc, argv);
}

void _start(void) {
    exit(__main_void());
}
