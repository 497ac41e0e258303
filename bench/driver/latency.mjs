// The latency section: what a single user sees. One worker of one kind on a queue and database of
// its own, one run at a time, each started the upstream way (runs.mjs) and its status read every
// 5 ms until it is terminal:
//   - back to back: the next run starts as soon as the last one is over (a busy worker);
//   - after idle: each run starts after `idleSeconds` with nothing to do (a worker that slows its
//     receives down on an empty queue pays for it here);
//   - start→wait (flowcraft-host only): after the same idle pause, `flowcraft-host start` and then
//     `flowcraft-host wait`, two fresh processes as a user's shell runs them, timed from spawning
//     `start` to `wait` exiting (the wake-up path as a user of the CLI sees it).
// Every run is checked; percentiles are over the runs that ended, right or wrong (a user sees a wrong
// run end too; the TS worker loses fan-8 outputs), not the stuck ones, as in the other sections. A
// few unmeasured runs go first in each series, so that the worker's start-up is not in the figures.

import { spawnSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { percentile, resourceNames } from "./measure.mjs";
import { Worker } from "./processes.mjs";
import { RunClient, runOutcome, timedRun } from "./runs.mjs";

/** Unmeasured runs before each series (the first one also waits for the worker to be up). */
const WARMUP_RUNS = 3;
/** A run (or a CLI command) still going after this long counts as stuck. */
const STUCK_AFTER_MS = 60_000;
/** The same for unmeasured runs: the first may wait for a worker that compiles its bundles. */
const WARMUP_STUCK_AFTER_MS = 240_000;

/** Runs that ended (right or wrong), not stuck: those whose times count. */
const ended = (runs) => runs.filter((run) => run.outcome !== "stuck");

/** Outcome counts of all runs, and percentiles of the measured ones that ended. */
function summarize(measured, warmups) {
  const outcomes = { correct: 0, wrong: 0, stuck: 0 };
  for (const run of [...warmups, ...measured]) outcomes[run.outcome] += 1;
  const sorted = ended(measured).map((run) => run.ms).sort((a, b) => a - b);
  return {
    runs: measured.length,
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    latenciesMs: ended(measured).map((run) => run.ms), // in the order the runs ran
    outcomes,
    wrongExamples: [...warmups, ...measured].filter((run) => run.outcome !== "correct").slice(0, 5).map((run) => `${run.runId}: ${run.why}`),
  };
}

/** `count` unmeasured runs of `workload`, one after the other. */
async function warmUp(client, workload, count, prefix, pollMs) {
  const runs = [];
  for (let i = 0; i < count; i++) runs.push(await timedRun(client, workload, `${prefix}-warm-${i}`, { pollMs, stuckAfterMs: WARMUP_STUCK_AFTER_MS }));
  return runs;
}

/** `runs` runs of `workload`, each started as soon as the one before is over. */
async function backToBack(client, workload, runs, prefix, pollMs) {
  const warmups = await warmUp(client, workload, WARMUP_RUNS, prefix, pollMs);
  const measured = [];
  for (let i = 0; i < runs; i++) measured.push(await timedRun(client, workload, `${prefix}-${i}`, { pollMs, stuckAfterMs: STUCK_AFTER_MS }));
  return { workload: workload.name, ...summarize(measured, warmups) };
}

/** `repetitions` runs of `workload`, each after `idleSeconds` with nothing to do. */
async function afterIdle(client, workload, idleSeconds, repetitions, prefix, pollMs) {
  const warmups = await warmUp(client, workload, WARMUP_RUNS, prefix, pollMs);
  const measured = [];
  for (let i = 0; i < repetitions; i++) {
    await sleep(idleSeconds * 1000);
    measured.push(await timedRun(client, workload, `${prefix}-${i}`, { pollMs, stuckAfterMs: STUCK_AFTER_MS }));
  }
  return { workload: workload.name, idleSeconds, ...summarize(measured, warmups) };
}

/** Runs the host binary with `args` to its end: `{status, stdout, stderr}` (status null if killed). */
function hostCommand(paths, env, args) {
  const result = spawnSync(paths.hostBinary, args, { env, encoding: "utf8", timeout: STUCK_AFTER_MS });
  return { status: result.status, stdout: result.stdout ?? "", stderr: (result.stderr ?? "").trim() };
}

/**
 * One run by the CLI, as in README "Running on Azure": `start` (without `--plugins`, as a client that
 * does not pin node versions) and, as soon as it has printed the run id, `wait`. Times the two
 * processes; the run is then checked from its status item.
 */
async function startThenWait(client, paths, env, workload, runId) {
  const begun = performance.now();
  const start = hostCommand(paths, env, [
    "start", workload.blueprintId, "--blueprints", paths.blueprints, "--context", JSON.stringify(workload.initialContext), "--run-id", runId,
  ]);
  const started = performance.now();
  if (start.status !== 0) throw new Error(`flowcraft-host start ${workload.blueprintId} failed (${start.status}): ${start.stderr}`);
  const printedId = start.stdout.trim();
  if (printedId !== runId) throw new Error(`flowcraft-host start printed ${JSON.stringify(printedId)}, not the run id ${runId}`);
  const wait = hostCommand(paths, env, ["wait", runId, "--timeout", String(STUCK_AFTER_MS / 1000)]);
  const ended = performance.now();
  const { outcome, why } = await runOutcome(client, workload, runId);
  const waitProblem = wait.status === 0 ? null : `wait exited ${wait.status ?? "on its timeout"}: ${wait.stderr}`;
  const reasons = [why, waitProblem].filter(Boolean).join("; ");
  return { runId, ms: ended - begun, startMs: started - begun, waitMs: ended - started, outcome, why: reasons };
}

/** `repetitions` CLI start→wait runs of `workload`, each after `idleSeconds` with nothing to do. */
async function startWaitAfterIdle(client, paths, env, workload, idleSeconds, repetitions, prefix) {
  const measured = [];
  for (let i = 0; i < repetitions; i++) {
    await sleep(idleSeconds * 1000);
    measured.push(await startThenWait(client, paths, env, workload, `${prefix}-${i}`));
  }
  const median = (values) => percentile(values.sort((a, b) => a - b), 0.5);
  return {
    workload: workload.name,
    idleSeconds,
    ...summarize(measured, []),
    startProcessMsP50: median(ended(measured).map((run) => run.startMs)),
    waitProcessMsP50: median(ended(measured).map((run) => run.waitMs)),
  };
}

/**
 * The latency section for one worker of `kind` on fresh resources: back to back for each of
 * `workloads.backToBack`, after idle for `workloads.afterIdle`, and for `host` start→wait too.
 * `settings`: latencyRuns, latencyIdleSeconds, latencyIdleRepetitions, latencyPollMs.
 */
export async function measureLatency({ services, paths, env, kind, workloads, settings, tag, logDir }) {
  const names = resourceNames(tag);
  const resources = await services.createResources(names);
  const workerEnv = { ...env, FLOWCRAFT_QUEUE: names.queue, FLOWCRAFT_DATABASE: names.database };
  const worker = new Worker(kind, paths, workerEnv, `${logDir}/${names.queue}.log`);
  const client = new RunClient(env, names, resources.queue);
  const pollMs = settings.latencyPollMs;
  const idleSeconds = settings.latencyIdleSeconds;
  const repetitions = settings.latencyIdleRepetitions;
  try {
    const result = { kind, backToBack: [] };
    for (const workload of workloads.backToBack) {
      result.backToBack.push(await backToBack(client, workload, settings.latencyRuns, `${names.queue}-b2b-${workload.name}`, pollMs));
      worker.assertRunning();
    }
    result.afterIdle = await afterIdle(client, workloads.afterIdle, idleSeconds, repetitions, `${names.queue}-idle`, pollMs);
    worker.assertRunning();
    if (kind === "host") {
      const cliEnv = { ...workerEnv, FLOWCRAFT_LOG: env.BENCH_WORKER_LOG ?? "warn" };
      result.startWait = await startWaitAfterIdle(client, paths, cliEnv, workloads.afterIdle, idleSeconds, repetitions, `${names.queue}-cli`);
      worker.assertRunning();
    }
    return result;
  } finally {
    await worker.stop();
    await services.deleteResources(resources);
  }
}
