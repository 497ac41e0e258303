// Starting runs and waiting for them, the upstream client way that both workers accept: the run's
// context item and status item in Cosmos, then one base64 queue message per start node (upstream
// §5.2). A run is over when its status item says so; its result is the context in `finalStatus`.
//
// `closedLoop` keeps a fixed number of runs in flight: a warm-up until every slot has ended a run
// (and at least `warmupSeconds` passed), then a measurement window of `windowSeconds`, then a drain
// in which no new run starts. Every run, in any phase, is checked against the workload's expected
// outputs. The driver's own requests (starts, status polls) are counted so they can be taken out of
// the services' counts. `timedRun` is one run on its own, timed as a single user sees it (the latency
// section).

import { Buffer } from "node:buffer";
import { setTimeout as sleep } from "node:timers/promises";
import { checkOutputs, startNodes } from "../workloads/workloads.mjs";
import { CosmosItems, QueueSender } from "./rest.mjs";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
/** Give up on a warm-up in which no run finishes. */
const WARMUP_LIMIT_MS = 240_000;
/** Slot i starts its first run i × this late, so that runs do not start (and end) in lockstep. */
const RAMP_STEP_MS = 50;

const unixSeconds = () => Math.floor(Date.now() / 1000);

export class RunClient {
  /**
   * @param env the services' client environment
   * @param names the measurement's queue, database and container names
   * @param queueClient the measurement's queue (an SDK client, for the SAS)
   */
  constructor(env, names, queueClient) {
    const connectionString = env.COSMOS_DB_CONNECTION_STRING;
    this.contexts = new CosmosItems(connectionString, names.database, names.contextContainer);
    this.statuses = new CosmosItems(connectionString, names.database, names.statusContainer);
    this.queue = new QueueSender(queueClient);
    this.own = { cosmos: {}, queue: {} };
  }

  count(service, kind, n = 1) {
    this.own[service][kind] = (this.own[service][kind] ?? 0) + n;
  }

  /** A copy of the driver's request counts so far. */
  ownRequests() {
    return { cosmos: { ...this.own.cosmos }, queue: { ...this.own.queue } };
  }

  async start(workload, runId) {
    const blueprintId = workload.blueprintId;
    await this.contexts.write({ id: runId, runId, blueprintId, blueprintVersion: null, ...workload.initialContext }, { upsert: false });
    this.count("cosmos", "doc.create");
    await this.statuses.write({ id: runId, runId, status: "running", lastUpdated: unixSeconds() }, { upsert: true });
    this.count("cosmos", "doc.upsert");
    for (const nodeId of startNodes(blueprintId)) {
      await this.queue.send(Buffer.from(JSON.stringify({ runId, blueprintId, nodeId })).toString("base64"));
      this.count("queue", "message.send");
    }
  }

  /** The run's status item, or null. */
  async status(runId) {
    this.count("cosmos", "doc.read");
    return this.statuses.read(runId);
  }
}

/** What became of one run: `correct`, `wrong` (with why) or `stuck`. */
function verdict(status, workload) {
  if (status.status !== "completed") return { outcome: "wrong", why: `${status.status}: ${status.finalStatus?.reason ?? ""}` };
  const context = status.finalStatus?.payload?.context;
  if (!context) return { outcome: "wrong", why: "completed without a final context" };
  const problem = checkOutputs(context, workload.expectedOutputs, workload.initialContext);
  return problem ? { outcome: "wrong", why: problem } : { outcome: "correct" };
}

/**
 * One run on its own, as a single user sees it: starts it, then reads its status every `pollMs`
 * until it is terminal (or `stuckAfterMs` passed). Returns its verdict and `ms`, the time from
 * starting it to reading the terminal status (so at most `pollMs` plus one read late).
 */
export async function timedRun(client, workload, runId, { pollMs, stuckAfterMs }) {
  const begun = performance.now();
  await client.start(workload, runId);
  for (;;) {
    await sleep(pollMs);
    const status = await client.status(runId);
    const ms = performance.now() - begun;
    if (status && TERMINAL.has(status.status)) return { runId, ms, ...verdict(status, workload) };
    if (ms > stuckAfterMs) return { runId, ms, outcome: "stuck", why: `still ${status?.status ?? "without status"}` };
  }
}

/** The verdict on a run that should be over by now (e.g. `flowcraft-host wait` returned): read once. */
export async function runOutcome(client, workload, runId) {
  const status = await client.status(runId);
  if (status && TERMINAL.has(status.status)) return verdict(status, workload);
  return { outcome: "stuck", why: `still ${status?.status ?? "without status"}` };
}

/**
 * How many runs' worth of work was done in `window`: each run counts with the share of its lifetime
 * that falls inside the window (its node-jobs taken as spread evenly over its lifetime). Unlike
 * counting the runs that end in the window, this does not depend on where run ends fall (with many
 * runs in flight they come in waves), nor, unlike counting queue messages, on how a worker maps
 * node-jobs to messages.
 */
function runsWithin(lifetimes, window) {
  let runs = 0;
  for (const [begun, ended] of lifetimes) {
    const overlap = Math.min(ended, window.endsAt) - Math.max(begun, window.startsAt);
    if (overlap > 0) runs += overlap / Math.max(ended - begun, 1e-9);
  }
  return runs;
}

/**
 * Runs `workload` closed-loop with `inFlight` runs at a time; calls `onWindowStart()` and
 * `onWindowEnd()` (counter snapshots) at the window's edges. A run still going after
 * max(`stuckAfterSeconds`, 10 × the typical latency) counts as stuck. Returns the runs' worth of
 * work done in the window, the latencies of the runs that finished in it, and the outcome counts of
 * all runs.
 */
export async function closedLoop({ client, workload, inFlight, warmupSeconds, windowSeconds, stuckAfterSeconds, runPrefix, onWindowStart, onWindowEnd, assertWorkersRunning }) {
  let typicalLatencyMs = 250; // moving average of finished runs, for the poll schedule
  let sequence = 0;
  let draining = false;
  let endedRuns = 0; // finished or stuck
  let finishedRuns = 0;
  let window = null; // {startsAt, endsAt} once open
  const windowLatencies = [];
  const totals = { started: 0, correct: 0, wrong: 0, stuck: 0 };
  const lifetimes = []; // [begun, ended] of every run that ended (not stuck)
  const wrongExamples = [];

  async function waitForRun(runId, begun) {
    let delay = Math.max(5, 0.7 * typicalLatencyMs);
    for (;;) {
      await sleep(delay);
      const status = await client.status(runId);
      if (status && TERMINAL.has(status.status)) return verdict(status, workload);
      if (performance.now() - begun > Math.max(stuckAfterSeconds * 1000, 10 * typicalLatencyMs)) {
        return { outcome: "stuck", why: `still ${status?.status ?? "without status"}` };
      }
      delay = Math.min(250, Math.max(5, 0.1 * typicalLatencyMs));
    }
  }

  async function lane(slot) {
    await sleep(slot * RAMP_STEP_MS);
    while (!draining) {
      const runId = `${runPrefix}-${sequence++}`;
      const begun = performance.now();
      totals.started += 1;
      await client.start(workload, runId);
      const { outcome, why } = await waitForRun(runId, begun);
      const finishedAt = performance.now();
      const latency = finishedAt - begun;
      totals[outcome] += 1;
      endedRuns += 1;
      if (outcome !== "correct" && wrongExamples.length < 5) wrongExamples.push(`${runId}: ${why}`);
      if (outcome === "stuck") continue;
      finishedRuns += 1;
      typicalLatencyMs = 0.9 * typicalLatencyMs + 0.1 * latency;
      lifetimes.push([begun, finishedAt]);
      if (window && finishedAt >= window.startsAt && !(finishedAt > window.endsAt)) windowLatencies.push(latency);
    }
  }

  async function phases() {
    const begun = performance.now();
    while (performance.now() - begun < warmupSeconds * 1000 || endedRuns < inFlight) {
      if (performance.now() - begun > WARMUP_LIMIT_MS) {
        throw new Error(`warm-up of ${workload.name}: only ${endedRuns} runs ended in ${WARMUP_LIMIT_MS / 1000} s`);
      }
      assertWorkersRunning();
      await sleep(100);
    }
    window = { startsAt: performance.now(), endsAt: Infinity };
    await onWindowStart();
    await sleep(windowSeconds * 1000);
    window.endsAt = performance.now();
    await onWindowEnd();
    assertWorkersRunning();
    draining = true;
  }

  const lanes = Promise.all(Array.from({ length: inFlight }, (_, slot) => lane(slot))); // they end when draining
  await Promise.race([phases(), lanes]);
  await lanes;
  windowLatencies.sort((a, b) => a - b);
  return {
    runsInWindow: runsWithin(lifetimes, window),
    runsFinishedInWindow: windowLatencies.length,
    latencies: windowLatencies,
    totals,
    wrongExamples,
  };
}
