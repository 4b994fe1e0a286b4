// Runs a preview1 core module under Node's own WASI (`node:wasi`), a host we did not write:
// the command suite's `<variant>@node`. The last argument is a JSON object
// `{ module, args, env, preopens, stackMiB }`; the program's stdin, stdout and stderr are this
// process's, and so is its exit status (`proc_exit(N)` ends `start` with N).
//
// The module runs in a worker whose stack is `stackMiB` (the wasm stack a sandbox has): the
// main thread's (about 1 MiB) ends deep Python nesting in V8's RangeError before the
// interpreter's own RecursionError.
import { Worker } from 'node:worker_threads';

const spec = JSON.parse(process.argv[process.argv.length - 1]);
const program = `
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';
import { parentPort, workerData } from 'node:worker_threads';
const wasi = new WASI({
  version: 'preview1',
  args: workerData.args,
  env: workerData.env,
  preopens: workerData.preopens,
  returnOnExit: true,
});
// Held from the global object: Node 20 can otherwise collect the WASI object while its
// start() is still running (its finaliser then aborts the process in uvwasi_destroy).
globalThis.eryxWasi = wasi;
const module = new WebAssembly.Module(readFileSync(workerData.module));
const instance = new WebAssembly.Instance(module, wasi.getImportObject());
parentPort.postMessage(globalThis.eryxWasi.start(instance));
`;
const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(program)}`), {
  workerData: spec,
  resourceLimits: { stackSizeMb: spec.stackMiB },
  // The worker's own JS streams are not piped into this thread's `process.stdout` and
  // `process.stderr`, so they are never made: making them puts the descriptors they wrap,
  // the ones `node:wasi` writes to, in non-blocking mode. A write to a full pipe then reached
  // the program as EAGAIN (`BlockingIOError`, or status 120 from CPython's exit-time flush)
  // where python3 waits for the reader.
  stdout: true,
  stderr: true,
});
worker.on('message', (status) => {
  process.exitCode = status;
});
worker.on('error', (error) => {
  console.error(error);
  process.exitCode = 1;
});
