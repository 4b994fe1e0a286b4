/*
 * The pinned libpython3.14.so refers to the process and thread CPU-time clock ids as data
 * symbols (`clockid_t` is a pointer to them in wasi-libc), which wasi-libc defines only in
 * its emulated-clocks static library. Defining them here lets the runtime library satisfy
 * those imports at link time. The layout is wasi-libc's private `struct __clockid`, which
 * holds one WASI clock id; 2 and 3 are WASI's process and thread CPU-time clocks.
 */
#include <stdint.h>

struct __clockid {
    uint32_t id;
};

const struct __clockid _CLOCK_PROCESS_CPUTIME_ID = { 2 };
const struct __clockid _CLOCK_THREAD_CPUTIME_ID = { 3 };
