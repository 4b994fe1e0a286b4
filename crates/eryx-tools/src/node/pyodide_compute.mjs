// Runs the compute workload file of `cargo xtask bench` under Pyodide (CPython built with
// Emscripten, run by V8): the bench's Pyodide column. The last argument is a JSON object
// `{ pyodide, file, workloads, runs }`: `pyodide` the directory of the unpacked, verified npm
// package (loaded from there, nothing fetched), `file` the workload file. It prints one JSON
// object on stdout, `{ "version": sys.version, "load_ms": …, "seconds": { "<workload>": [runs…] } }`;
// the workloads' own output goes nowhere else.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const spec = JSON.parse(process.argv[process.argv.length - 1]);
const { loadPyodide } = await import(pathToFileURL(path.join(spec.pyodide, 'pyodide.mjs')).href);
const started = performance.now();
const pyodide = await loadPyodide({ indexURL: spec.pyodide + path.sep });
const loadMs = performance.now() - started;
let printed = [];
pyodide.setStdout({ batched: (line) => printed.push(line) });
pyodide.setStderr({ batched: (line) => process.stderr.write(`pyodide: ${line}\n`) });
const source = readFileSync(spec.file, 'utf8');
const seconds = {};
for (const workload of spec.workloads) {
  seconds[workload] = [];
  for (let run = 0; run < spec.runs; run++) {
    printed = [];
    pyodide.runPython(`${source}\nreport(${JSON.stringify(workload)})\n`);
    const value = Number(printed.join('').trim());
    if (!Number.isFinite(value)) {
      throw new Error(`${workload} printed ${JSON.stringify(printed)} under Pyodide`);
    }
    seconds[workload].push(value);
  }
}
const version = pyodide.runPython('import sys; sys.version');
process.stdout.write(JSON.stringify({ version, load_ms: loadMs, seconds }) + '\n');
