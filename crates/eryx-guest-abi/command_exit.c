// `exit` and `_exit` for the command forms (`python-<variant>.wasm`): they carry the program's
// status out. The preview1 adapter ends every non-zero `proc_exit` as plain failure (status
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
