// The embedded comparison: the same large blueprints run in one process by `flowcraft-host run` (WASM
// nodes) and by npm flowcraft's in-memory FlowRuntime (bench/ts-reference/embedded.mjs, JavaScript
// nodes). Each run is a fresh process, timed from the outside (wall clock; user + system CPU from the
// shell's `times`); the best of the repetitions counts (noise on a shared machine only adds time).
//
// Nodes/s is about the runtime, not process start-up, which differs a lot (Node loads its modules for
// ~100 ms): the TS side times `FlowRuntime.run` itself; for flowcraft-host, whose CLI has no such
// timer, the time beyond a one-node run of the same process (start, bundle loading) counts, and is
// left out when under a millisecond.

import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { checkOutputs, embeddedBaseline, embeddedWorkloads } from "../workloads/workloads.mjs";

/** Beyond-start-up times under this are start-up noise, not a measurement. */
const MIN_NET_MS = 1;

/** Runs `command` once; returns wall ms, CPU ms of the process tree and its stdout. */
function timedRun(command, args, outFile) {
  const script = 'out="$1"; shift; "$@" >"$out"; status=$?; times; exit $status';
  const begun = performance.now();
  const result = spawnSync("bash", ["-c", script, "bash", outFile, command, ...args], { encoding: "utf8" });
  const wallMs = performance.now() - begun;
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr}`);
  // `times` prints the shell's user/system times, then its children's, e.g. "0m0.052s 0m0.043s".
  const children = result.stdout.trim().split("\n").at(-1);
  const cpuMs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, [, m, s]) => sum + (Number(m) * 60 + Number(s)) * 1000, 0);
  return { wallMs, cpuMs, output: readFileSync(outFile, "utf8") };
}

function commandFor(kind, paths, blueprintFile, context) {
  return kind === "host"
    ? [paths.hostBinary, ["run", blueprintFile, "--plugins", paths.plugins, "--context", context, "--quiet"]]
    : [process.execPath, [paths.tsEmbedded, blueprintFile, "--context", context]];
}

/**
 * Best wall and CPU of `repetitions` runs (after one unmeasured run), each checked; for the TS side
 * also the best in-run wall and CPU it reports.
 */
function measureOne(kind, workload, paths, repetitions, tmpDir) {
  const blueprintFile = `${tmpDir}/${workload.blueprint.id}.json`;
  writeFileSync(blueprintFile, JSON.stringify(workload.blueprint));
  const [command, args] = commandFor(kind, paths, blueprintFile, JSON.stringify(workload.initialContext));
  const outFile = `${tmpDir}/${workload.blueprint.id}-${kind}.out.json`;
  const walls = [];
  const cpus = [];
  const runWalls = [];
  const runCpus = [];
  for (let i = 0; i <= repetitions; i++) {
    const { wallMs, cpuMs, output } = timedRun(command, args, outFile);
    const result = JSON.parse(output);
    const problem =
      result.status === "completed"
        ? checkOutputs(result.context, workload.expectedOutputs, workload.initialContext)
        : `status ${result.status}`;
    if (problem) throw new Error(`embedded ${workload.name} on ${kind}: wrong result: ${problem}`);
    if (i > 0) {
      walls.push(wallMs);
      cpus.push(cpuMs);
      runWalls.push(result.runMs);
      runCpus.push(result.runCpuMs);
    }
  }
  const best = (values) => Math.min(...values);
  return { wallMs: best(walls), cpuMs: best(cpus), runMs: kind === "ts" ? best(runWalls) : null, runCpuMs: kind === "ts" ? best(runCpus) : null };
}

/** Both sides on the one-node baseline and on each embedded workload. */
export function measureEmbedded({ paths, repetitions, tmpDir }) {
  const results = [];
  const baseline = {
    host: measureOne("host", embeddedBaseline, paths, repetitions, tmpDir),
    ts: measureOne("ts", embeddedBaseline, paths, repetitions, tmpDir),
  };
  for (const workload of embeddedWorkloads()) {
    const sides = {};
    for (const kind of ["host", "ts"]) {
      const measured = measureOne(kind, workload, paths, repetitions, tmpDir);
      const runMs = kind === "ts" ? measured.runMs : measured.wallMs - baseline.host.wallMs;
      const runCpuMs = kind === "ts" ? measured.runCpuMs : Math.max(measured.cpuMs - baseline.host.cpuMs, 0);
      sides[kind] = {
        wallMs: measured.wallMs,
        cpuMs: measured.cpuMs,
        startupWallMs: baseline[kind].wallMs,
        runMs,
        runCpuMs,
        nodesPerSecond: runMs >= MIN_NET_MS ? workload.nodes / (runMs / 1000) : null,
        cpuMsPer1000Nodes: (runCpuMs / workload.nodes) * 1000,
      };
    }
    results.push({ workload: workload.name, nodes: workload.nodes, repetitions, ...sides });
  }
  return results;
}
