// `_start`, `exit` and `_exit` of the command components (`python-<variant>.wasm`); the
// program's `main` (`__main_argc_argv`) is the variant's. `exit` and `_exit` carry the
// program's status out. The preview1 adapter ends every non-zero `proc_exit` as plain failure (status
// 1), so a failing status goes to the host through `wasi:cli/exit`'s `exit-with-code` (stable
// since WASI 0.2.12) instead. The command's linker puts the entry library first, and the first
// library that exports a symbol wins: these replace libc's for every library of the program
// (CPython's `Py_Exit` after `sys.exit(3)`, `os._exit`, Rust's `std::process::exit`).
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((__import_module__("wasi:cli/exit@0.2.12"), __import_name__("exit-with-code")))
_Noreturn void eryx_exit_with_code(int status_code);

// Like a POSIX status, only the low 8 bits travel (`sys.exit(256)` is 0).
static _Noreturn void leave(int status) {
    if ((status & 0xff) != 0) {
        eryx_exit_with_code(status & 0xff);
    }
    _Exit(0);
}

int __main_void(void);

// The library constructors have already run (the component's linker runs them at
// instantiation); wasi-libc's `__main_void` reads the arguments from WASI and calls `main`.
void _start(void) {
    exit(__main_void());
}

// The interpreter has finalised itself before it calls `exit`; C's streams are flushed here.
// libc's own atexit handlers do not run (the instance ends).
_Noreturn void exit(int status) {
    fflush(NULL);
    leave(status);
}

// `os._exit`: no flushing, as on POSIX.
_Noreturn void _exit(int status) {
    leave(status);
}
