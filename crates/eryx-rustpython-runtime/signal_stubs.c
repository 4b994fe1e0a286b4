/*
 * RustPython's signal support calls `pthread_sigmask`, which the pinned `libc.so` does not
 * define (wasi-libc builds it only with threads). The guest has one thread and WASI delivers
 * no signals, so every mask is empty and changing it has no effect; this definition says
 * exactly that. `sigset_t` is declared with wasi-libc's (musl's) layout, 128 bytes, since
 * the system headers used to compile this file predate it.
 */
#include <stddef.h>
#include <string.h>

typedef struct {
    unsigned long bits[128 / sizeof(long)];
} eryx_sigset;

int pthread_sigmask(int how, const eryx_sigset *set, eryx_sigset *old) {
    (void)how;
    (void)set;
    if (old != NULL) {
        memset(old, 0, sizeof *old);
    }
    return 0;
}
