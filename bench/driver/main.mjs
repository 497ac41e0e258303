#!/usr/bin/env node
// The benchmark driver: flowcraft-host against the TypeScript reference worker on the same local
// services. Measures each workload with one worker of each kind, then three; a mixed fleet; an idle
// worker of each kind; the latency a single user sees; and the embedded comparison. Prints one table
// and writes it, with the raw measurements and a description of the machine, as JSON and markdown.
//
// Started by bench/run.sh, which builds everything and starts private services; it passes their
// client environment (`scripts/azure-local.sh env`), BENCH_SERVICES_DIR (their pid files),
// BENCH_SCRATCH_DIR (logs, temporary files) and BENCH_HOST_BINARY.
//
// Options: --quick (short windows and 20 runs in flight, for a smoke test), --seconds N (measurement
// window, default 30), --in-flight N (runs in flight, default 100), --workloads a,b (names from
// workloads.mjs), --skip a,b and --only a,b (sections, of: one, three, mixed, idle, latency, embedded;
// `one` is each workload with one worker of each kind), --out DIR (where results go; default
// bench/results, or the scratch directory for --quick).

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { workloads } from "../workloads/workloads.mjs";
import { measureEmbedded } from "./embedded.mjs";
import { measureLatency } from "./latency.mjs";
import { measureFleet, measureIdle } from "./measure.mjs";
import { buildRows, formatMarkdown, formatNumber, formatText } from "./report.mjs";
import { Services } from "./services.mjs";

const root = new URL("../../", import.meta.url).pathname;

const { values: options } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    seconds: { type: "string" },
    "in-flight": { type: "string" },
    workloads: { type: "string" },
    skip: { type: "string", default: "" },
    only: { type: "string" },
    out: { type: "string" },
  },
});

const quick = options.quick;
const settings = {
  inFlight: Number(options["in-flight"] ?? (quick ? 20 : 100)),
  warmupSeconds: quick ? 2 : 8,
  windowSeconds: Number(options.seconds ?? (quick ? 4 : 30)),
  // With 100 runs in flight a slow worker's runs take tens of seconds before their typical latency is known.
  stuckAfterSeconds: 120,
  mixedWindowSeconds: quick ? 4 : 20,
  // The mixed fleet is about correctness: a run stuck for good is found sooner.
  mixedStuckAfterSeconds: 30,
  idleSeconds: quick ? 4 : 20,
  embeddedRepetitions: quick ? 3 : 15,
  // The latency section: runs back to back per workload; runs after an idle pause, and the pause.
  latencyRuns: quick ? 8 : 30,
  latencyIdleRepetitions: quick ? 3 : 5,
  latencyIdleSeconds: quick ? 2 : 4,
  latencyPollMs: 5,
};

/** The sections of the benchmark, in the order they run; `--skip` and `--only` name them. */
const SECTIONS = ["one", "three", "mixed", "idle", "latency", "embedded"];
const sectionList = (text) => {
  const names = (text ?? "").split(",").filter(Boolean);
  const unknown = names.filter((name) => !SECTIONS.includes(name));
  if (unknown.length) throw new Error(`no section named ${unknown.join(", ")}; known: ${SECTIONS.join(", ")}`);
  return new Set(names);
};
const skip = sectionList(options.skip);
const only = options.only ? sectionList(options.only) : null;
/** True when the options leave `section` in. */
const runs = (section) => (!only || only.has(section)) && !skip.has(section);
const selected = options.workloads ? workloads.filter((w) => options.workloads.split(",").includes(w.name)) : workloads;
if (selected.length === 0) throw new Error(`no workload named ${options.workloads}; known: ${workloads.map((w) => w.name).join(", ")}`);

const paths = {
  hostBinary: process.env.BENCH_HOST_BINARY ?? `${root}target/release/flowcraft-host`,
  plugins: `${root}plugins-example/dist`,
  blueprints: `${root}bench/workloads/blueprints`,
  tsWorker: `${root}bench/ts-reference/worker.mjs`,
  tsEmbedded: `${root}bench/ts-reference/embedded.mjs`,
};
const scratchDir = process.env.BENCH_SCRATCH_DIR ?? `${root}target/bench`;
const outDir = options.out ?? (quick ? scratchDir : `${root}bench/results`);
const logDir = `${scratchDir}/logs`;
mkdirSync(logDir, { recursive: true });

const progress = (text) => process.stderr.write(`bench: ${text}\n`);

function commandOutput(command, args) {
  try {
    return execFileSync(command, args, { encoding: "utf8" }).trim().split("\n")[0];
  } catch {
    return null;
  }
}

function packageVersion(name) {
  return JSON.parse(readFileSync(`${root}bench/ts-reference/node_modules/${name}/package.json`, "utf8")).version;
}

function machineDescription() {
  const osRelease = readFileSync("/etc/os-release", "utf8");
  return {
    cpuModel: os.cpus()[0]?.model,
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease)?.[1],
    kernel: os.release(),
    node: process.version,
    rustc: commandOutput("rustc", ["--version"]),
    flowcraftHost: commandOutput(paths.hostBinary, ["--version"]),
    redisServer: commandOutput("redis-server", ["--version"]),
    tsPackages: Object.fromEntries(["flowcraft", "@azure/cosmos", "@azure/storage-queue", "ioredis"].map((name) => [name, packageVersion(name)])),
    loadAverageAtStart: os.loadavg(),
  };
}

function summary(side, m) {
  return `${side}: ${formatNumber(m.nodeJobsPerSecond)} node-jobs/s, peak RSS ${formatNumber(m.peakRssMiB)} MiB, ${formatNumber(m.workerCpuSecondsPer1000NodeJobs)} CPU-s/1000 node-jobs, ${formatNumber(m.requestsPerNodeJob?.total)} req/node-job, ` +
    `runs ${m.outcomes.correct} correct / ${m.outcomes.wrong} wrong / ${m.outcomes.stuck} stuck`;
}

/** The latency section's p50 figures of one worker kind, for the progress lines. */
function latencySummary(side, m) {
  const figures = [
    ...m.backToBack.map((b) => `${b.workload} back to back p50 ${formatNumber(b.p50)} ms`),
    `after ${m.afterIdle.idleSeconds} s idle p50 ${formatNumber(m.afterIdle.p50)} ms`,
    ...(m.cli ? [`start --wait p50 ${formatNumber(m.cli.oneProcess.p50)} ms`, `start, then wait p50 ${formatNumber(m.cli.twoProcesses.p50)} ms`] : []),
  ];
  return `${side}: ${figures.join(", ")}`;
}

/**
 * The latency section with one worker of each kind in turn, each on resources of its own: back to
 * back for chain-10 and fan-8 (those that --workloads selects), after idle and start→wait for chain-10.
 */
async function measureLatencyBothKinds(services, env, stamp) {
  const latencyWorkloads = {
    backToBack: selected.filter((w) => ["chain-10", "fan-8"].includes(w.name)),
    afterIdle: workloads.find((w) => w.name === "chain-10"),
  };
  const latency = {};
  for (const kind of ["host", "ts"]) {
    progress(`latency, one ${kind} worker, one run at a time...`);
    latency[kind] = await measureLatency({ services, paths, env, kind, workloads: latencyWorkloads, settings, tag: `${stamp}-latency-${kind}`, logDir });
    progress(latencySummary(kind, latency[kind]));
  }
  return latency;
}

async function main() {
  const env = { ...process.env };
  const services = new Services(env, process.env.BENCH_SERVICES_DIR ?? `${scratchDir}/services`);
  const startedAt = new Date();
  const results = { startedAt: startedAt.toISOString(), machine: machineDescription(), settings: { ...settings, quick }, distributed: [] };
  const stamp = startedAt.toISOString().replace(/[-:]/g, "").slice(0, 13);
  try {
    const workerCounts = [1, 3].filter((n) => runs(n === 1 ? "one" : "three"));
    for (const workers of workerCounts) {
      for (const workload of selected) {
        const sides = {};
        for (const kind of ["host", "ts"]) {
          progress(`${workload.name}, ${workers} ${kind} worker(s), ${settings.windowSeconds} s window...`);
          sides[kind] = await measureFleet({
            services,
            paths,
            env,
            fleet: Array.from({ length: workers }, () => ({ kind })),
            workload,
            settings,
            tag: `${stamp}-${kind}-${workload.name}-${workers}w`,
            logDir,
          });
          progress(summary(kind, sides[kind]));
        }
        results.distributed.push({ workload: workload.name, workers, ...sides });
      }
    }
    if (runs("mixed")) {
      results.mixed = [];
      for (const workload of workloads.filter((w) => ["chain-10", "fan-8"].includes(w.name))) {
        progress(`mixed fleet (1 TS + 1 host --mixed-fleet), ${workload.name}...`);
        const measurement = await measureFleet({
          services,
          paths,
          env,
          fleet: [{ kind: "ts" }, { kind: "host", options: { mixedFleet: true } }],
          workload,
          settings: { ...settings, windowSeconds: settings.mixedWindowSeconds, stuckAfterSeconds: settings.mixedStuckAfterSeconds },
          tag: `${stamp}-mixed-${workload.name}`,
          logDir,
        });
        progress(summary("mixed", measurement));
        results.mixed.push(measurement);
      }
    }
    if (runs("idle")) {
      results.idle = {};
      for (const kind of ["host", "ts"]) {
        progress(`idle ${kind} worker, ${settings.idleSeconds} s...`);
        results.idle[kind] = await measureIdle({ services, paths, env, kind, seconds: settings.idleSeconds, logDir });
      }
    }
    if (runs("latency")) {
      results.latency = await measureLatencyBothKinds(services, env, stamp);
    }
    if (runs("embedded")) {
      progress(`embedded comparison, ${settings.embeddedRepetitions} runs each...`);
      results.embedded = measureEmbedded({ paths, repetitions: settings.embeddedRepetitions, tmpDir: scratchDir });
    }
  } finally {
    services.close();
  }
  results.finishedAt = new Date().toISOString();
  results.machine.loadAverageAtEnd = os.loadavg();
  const windows = [...results.distributed.flatMap((d) => [d.host, d.ts]), ...(results.mixed ?? [])];
  results.machine.otherProcessesCoresInWindows = {
    mean: windows.reduce((sum, m) => sum + m.cpuCores.other, 0) / Math.max(windows.length, 1),
    max: Math.max(0, ...windows.map((m) => m.cpuCores.other)),
  };
  const rows = buildRows(results);
  results.rows = rows;

  const table = formatText(rows);
  process.stdout.write(`\n${table}\n\n`);
  mkdirSync(outDir, { recursive: true });
  const base = `${outDir}/${quick ? "quick-" : ""}${stamp}`;
  writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(`${base}.md`, markdownReport(results, rows));
  progress(`wrote ${base.replace(root, "")}.json and .md`);
}

function markdownReport(results, rows) {
  const m = results.machine;
  const s = results.settings;
  return `# flowcraft-host vs the TypeScript reference worker — ${results.startedAt}

Machine: ${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.os} (Linux ${m.kernel}); ${m.node}, ${m.rustc};
${m.flowcraftHost}; ${m.redisServer}; TS side: ${Object.entries(m.tsPackages).map(([n, v]) => `${n} ${v}`).join(", ")}.
Load average at start ${m.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")}, at end ${m.loadAverageAtEnd.map((l) => l.toFixed(2)).join(" ")};
CPU used by processes other than the workers, services and driver during the measurement windows:
mean ${formatNumber(m.otherProcessesCoresInWindows.mean)} cores, max ${formatNumber(m.otherProcessesCoresInWindows.max)}.

Settings: ${s.inFlight} runs in flight (closed loop), ${s.warmupSeconds} s warm-up (and until every slot ended a run),
${s.windowSeconds} s measurement window (mixed fleet ${s.mixedWindowSeconds} s), idle ${s.idleSeconds} s, embedded best of ${s.embeddedRepetitions} runs${s.quick ? " — QUICK smoke run, not a measurement" : ""}.
Latency: one worker, one run at a time, its status read every ${s.latencyPollMs} ms; ${s.latencyRuns} runs back to back,
${s.latencyIdleRepetitions} runs each after ${s.latencyIdleSeconds} s idle (the host's CLI start→wait likewise).

Requests are counted at the services in the measurement window, without the driver's own (run starts, status polls).
Runs correct / wrong / stuck count every run of the measurement (warm-up, window and drain).

${formatMarkdown(rows)}
`;
}

main().catch((error) => {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  process.exit(1);
});
