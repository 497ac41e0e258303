// The latency section: what a single user sees. One worker of one kind on a queue and database of
// its own, one run at a time, each started the upstream way (runs.mjs) and its status read every
// 5 ms until it is terminal:
//   - back to back: the next run starts as soon as the last one is over (a busy worker);
//   - after idle: each run starts after `idleSeconds` with nothing to do (a worker that slows its
//     receives down on an empty queue pays for it here);
//   - by the CLI (flowcraft-host only), after the same idle pause, timed from spawning `start` until
//     the run's end is printed (the wake-up path as a user of the CLI sees it): `start --wait`, one
//     process; and `start`, then `wait`, two processes as a shell script runs them;
//   - through `serve`'s API (flowcraft-host only): the worker replaced by `flowcraft-host serve` on
//     the same resources, each run after the same idle pause by `start --server URL --wait`.
// Every run is checked; percentiles are over the runs that ended, right or wrong (a user sees a wrong
// run end too; the TS worker loses fan-8 outputs), not the stuck ones, as in the other sections. A
// few unmeasured runs go first in each series, so that the worker's start-up is not in the figures.

import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
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

/** The arguments of `flowcraft-host start` for one run of `workload`. */
function startArguments(paths, workload, runId) {
  return ["start", workload.blueprintId, "--blueprints", paths.blueprints, "--context", JSON.stringify(workload.initialContext), "--run-id", runId];
}

/** Throws unless the CLI command succeeded and printed `runId` as its first line. */
function checkStarted(command, result, runId) {
  if (result.status !== 0 && result.stdout === "") throw new Error(`flowcraft-host ${command} failed (${result.status}): ${result.stderr}`);
  const printedId = result.stdout.split("\n")[0].trim();
  if (printedId !== runId) throw new Error(`flowcraft-host ${command} printed ${JSON.stringify(printedId)}, not the run id ${runId}`);
}

/** The run's outcome from its status item, plus a note when the command waiting for it failed. */
async function checkedOutcome(client, workload, runId, command, result) {
  const { outcome, why } = await runOutcome(client, workload, runId);
  const problem = result.status === 0 ? null : `${command} exited ${result.status ?? "on its timeout"}: ${result.stderr}`;
  return { outcome, why: [why, problem].filter(Boolean).join("; ") };
}

/**
 * One run by the CLI, as in README "Running on Azure": `start --wait` (without `--plugins`, as a
 * client that does not pin node versions), timed until the process exits.
 */
async function startWaiting(client, paths, env, workload, runId, extra = []) {
  const begun = performance.now();
  const result = hostCommand(paths, env, [...startArguments(paths, workload, runId), "--wait", "--timeout", String(STUCK_AFTER_MS / 1000), ...extra]);
  const ended = performance.now();
  checkStarted("start --wait", result, runId);
  return { runId, ms: ended - begun, ...(await checkedOutcome(client, workload, runId, "start --wait", result)) };
}

/** One run by the CLI as a shell script does it: `start`, and once it has printed the run id, `wait`. */
async function startThenWait(client, paths, env, workload, runId) {
  const begun = performance.now();
  const start = hostCommand(paths, env, startArguments(paths, workload, runId));
  const started = performance.now();
  if (start.status !== 0) throw new Error(`flowcraft-host start ${workload.blueprintId} failed (${start.status}): ${start.stderr}`);
  checkStarted("start", start, runId);
  const wait = hostCommand(paths, env, ["wait", runId, "--timeout", String(STUCK_AFTER_MS / 1000)]);
  const ended = performance.now();
  const checked = await checkedOutcome(client, workload, runId, "wait", wait);
  return { runId, ms: ended - begun, startMs: started - begun, waitMs: ended - started, ...checked };
}

/**
 * `repetitions` runs of `workload` by the CLI in each of its two forms, each run after `idleSeconds`
 * with nothing to do: `{oneProcess, twoProcesses}`.
 */
async function cliAfterIdle(client, paths, env, workload, idleSeconds, repetitions, prefix) {
  const oneProcess = [];
  const twoProcesses = [];
  for (let i = 0; i < repetitions; i++) {
    await sleep(idleSeconds * 1000);
    oneProcess.push(await startWaiting(client, paths, env, workload, `${prefix}-one-${i}`));
    await sleep(idleSeconds * 1000);
    twoProcesses.push(await startThenWait(client, paths, env, workload, `${prefix}-two-${i}`));
  }
  const median = (values) => percentile(values.sort((a, b) => a - b), 0.5);
  return {
    oneProcess: { workload: workload.name, idleSeconds, ...summarize(oneProcess, []) },
    twoProcesses: {
      workload: workload.name,
      idleSeconds,
      ...summarize(twoProcesses, []),
      startProcessMsP50: median(ended(twoProcesses).map((run) => run.startMs)),
      waitProcessMsP50: median(ended(twoProcesses).map((run) => run.waitMs)),
    },
  };
}

/** A TCP port nothing listens on now. */
async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Waits until `serve` answers `/healthz` (it may first compile its bundles). */
async function serverUp(base, server) {
  const deadline = performance.now() + WARMUP_STUCK_AFTER_MS;
  while (performance.now() < deadline) {
    server.assertRunning();
    try {
      if ((await fetch(`${base}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`flowcraft-host serve did not answer ${base}/healthz`);
}

/**
 * `repetitions` runs of `workload` through the API of `serve` at `base`, each after `idleSeconds`
 * with nothing to do, by `start --server URL --wait`; two unmeasured runs first.
 */
async function serverAfterIdle(client, paths, env, workload, base, idleSeconds, repetitions, prefix) {
  const extra = ["--server", base];
  for (let i = 0; i < 2; i++) await startWaiting(client, paths, env, workload, `${prefix}-warm-${i}`, extra);
  const measured = [];
  for (let i = 0; i < repetitions; i++) {
    await sleep(idleSeconds * 1000);
    measured.push(await startWaiting(client, paths, env, workload, `${prefix}-${i}`, extra));
  }
  return { workload: workload.name, idleSeconds, ...summarize(measured, []) };
}

/**
 * The latency section for one worker of `kind` on fresh resources: back to back for each of
 * `workloads.backToBack`, after idle for `workloads.afterIdle`, and for `host` by the CLI too.
 * `settings`: latencyRuns, latencyIdleSeconds, latencyIdleRepetitions, latencyPollMs.
 */
export async function measureLatency({ services, paths, env, kind, workloads, settings, tag, logDir }) {
  const names = resourceNames(tag);
  const resources = await services.createResources(names);
  const workerEnv = { ...env, FLOWCRAFT_QUEUE: names.queue, FLOWCRAFT_DATABASE: names.database };
  let worker = new Worker(kind, paths, workerEnv, `${logDir}/${names.queue}.log`);
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
      result.cli = await cliAfterIdle(client, paths, cliEnv, workloads.afterIdle, idleSeconds, repetitions, `${names.queue}-cli`);
      worker.assertRunning();
      await worker.stop();
      const port = await freePort();
      const base = `http://127.0.0.1:${port}`;
      worker = new Worker("serve", paths, workerEnv, `${logDir}/${names.queue}-serve.log`, { port });
      await serverUp(base, worker);
      result.viaServer = await serverAfterIdle(client, paths, cliEnv, workloads.afterIdle, base, idleSeconds, repetitions, `${names.queue}-api`);
      worker.assertRunning();
    }
    return result;
  } finally {
    await worker.stop();
    await services.deleteResources(resources);
  }
}
