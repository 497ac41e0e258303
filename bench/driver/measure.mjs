// One measurement on the services: a fleet of workers on a queue and database of their own, one
// workload closed-loop, counters read at the edges of the measurement window, and the figures the
// report shows (throughput, latency, CPU, memory, requests per node-job, outcomes). Also the idle
// measurement: one worker on an empty queue.

import { setTimeout as sleep } from "node:timers/promises";
import { closedLoop, RunClient } from "./runs.mjs";
import { cpuSeconds, machineCpuSeconds, peakRssMiB, Worker } from "./processes.mjs";
import { subtractCounts } from "./services.mjs";

/** Seconds an idle worker gets to start before its idle window opens. */
const IDLE_SETTLE_SECONDS = 5;

/** Queue and database names of a measurement (3–63 lowercase letters, digits and hyphens). */
export function resourceNames(tag) {
  const name = `bench-${tag}`.toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 63);
  return { queue: name, database: name, contextContainer: "workflow-contexts", statusContainer: "workflow-statuses" };
}

/** The `q` quantile of ascending `sorted` (nearest rank), or null when empty. */
export function percentile(sorted, q) {
  return sorted.length ? sorted[Math.round((sorted.length - 1) * q)] : null;
}

/** CPU seconds of each process now. */
const cpuOf = (pids) => Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));

/** Everything that is compared between the two edges of a window. */
async function snapshot(services, client, workers) {
  const driver = process.cpuUsage();
  return {
    at: performance.now(),
    requests: await services.requests(),
    own: client ? client.ownRequests() : { cosmos: {}, queue: {} },
    workerCpu: workers.map((worker) => cpuSeconds(worker.pid)),
    serviceCpu: cpuOf(services.pids()),
    driverCpu: (driver.user + driver.system) / 1e6,
    machine: machineCpuSeconds(),
  };
}

/** CPU use in the window in cores: per service, the driver, the workers, and everything else. */
function cpuCores(before, after, seconds) {
  const cores = (a, b) => (a - b) / seconds;
  const services = Object.fromEntries(
    Object.keys(after.serviceCpu).map((name) => [name, cores(after.serviceCpu[name], before.serviceCpu[name])]),
  );
  const workers = after.workerCpu.map((cpu, i) => cores(cpu, before.workerCpu[i]));
  const driver = cores(after.driverCpu, before.driverCpu);
  const machine = cores(after.machine.busy, before.machine.busy);
  const ours = Object.values(services).reduce((a, b) => a + b, 0) + workers.reduce((a, b) => a + b, 0) + driver;
  return { services, workers, driver, machine, other: Math.max(0, machine - ours) };
}

/** Requests per node-job by service and kind, with per-service and overall totals. */
function perNodeJob(requests, nodeJobs) {
  const result = { total: 0 };
  for (const [service, kinds] of Object.entries(requests)) {
    const byKind = {};
    let total = 0;
    for (const [kind, count] of Object.entries(kinds)) {
      byKind[kind] = count / nodeJobs;
      total += count;
    }
    result[service] = { total: total / nodeJobs, byKind };
    result.total += total / nodeJobs;
  }
  return result;
}

/**
 * Runs `workload` on a fleet (`[{kind, options}]`, e.g. three `host` workers) and returns the
 * measurement. `settings`: inFlight, warmupSeconds, windowSeconds, stuckAfterSeconds.
 */
export async function measureFleet({ services, paths, env, fleet, workload, settings, tag, logDir }) {
  const names = resourceNames(tag);
  const resources = await services.createResources(names);
  const workerEnv = { ...env, FLOWCRAFT_QUEUE: names.queue, FLOWCRAFT_DATABASE: names.database };
  const workers = fleet.map(({ kind, options }, i) => new Worker(kind, paths, workerEnv, `${logDir}/${names.queue}-${i}-${kind}.log`, options));
  const client = new RunClient(env, names, resources.queue);
  let before;
  let after;
  let redisCounter;
  let redisRoundTrips;
  try {
    const loop = await closedLoop({
      client,
      workload,
      inFlight: settings.inFlight,
      warmupSeconds: settings.warmupSeconds,
      windowSeconds: settings.windowSeconds,
      stuckAfterSeconds: settings.stuckAfterSeconds,
      runPrefix: names.queue,
      onWindowStart: async () => {
        redisCounter = await services.countRedisRoundTrips();
        before = await snapshot(services, client, workers);
      },
      onWindowEnd: async () => {
        after = await snapshot(services, client, workers);
        redisRoundTrips = redisCounter.stop();
      },
      assertWorkersRunning: () => workers.forEach((worker) => worker.assertRunning()),
    });
    const peakRss = workers.map((worker) => peakRssMiB(worker.pid));
    const seconds = (after.at - before.at) / 1000;
    const own = subtractCounts(after.own, before.own);
    const counted = subtractCounts(subtractCounts(after.requests, before.requests), own);
    const requests = { cosmos: counted.cosmos, queue: counted.queue, redis: redisRoundTrips };
    const nodeJobs = loop.runsInWindow * workload.nodes;
    const cpu = cpuCores(before, after, seconds);
    const workerCpuSeconds = cpu.workers.reduce((a, b) => a + b, 0) * seconds;
    return {
      workload: workload.name,
      fleet: fleet.map(({ kind, options }) => ({ kind, ...options })),
      inFlight: settings.inFlight,
      windowSeconds: seconds,
      runsFinishedInWindow: loop.runsFinishedInWindow,
      runsPerSecond: loop.runsInWindow / seconds,
      nodeJobs,
      nodeJobsPerSecond: nodeJobs / seconds,
      latencyMs: { p50: percentile(loop.latencies, 0.5), p95: percentile(loop.latencies, 0.95) },
      workerCpuSecondsPer1000NodeJobs: nodeJobs ? (workerCpuSeconds / nodeJobs) * 1000 : null,
      peakRssMiB: Math.max(...peakRss.map((rss) => rss ?? 0)),
      peakRssMiBEach: peakRss,
      requestsPerNodeJob: nodeJobs ? perNodeJob(requests, nodeJobs) : null,
      requests,
      redisCommandsInclScripts: counted.redis,
      driverRequests: own,
      cpuCores: cpu,
      outcomes: loop.totals,
      wrongExamples: loop.wrongExamples,
    };
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await services.deleteResources(resources);
  }
}

/** One worker of `kind` on an empty queue for `seconds`: CPU cores and requests per second. */
export async function measureIdle({ services, paths, env, kind, seconds, logDir }) {
  const names = resourceNames(`idle-${kind}`);
  const resources = await services.createResources(names);
  const workerEnv = { ...env, FLOWCRAFT_QUEUE: names.queue, FLOWCRAFT_DATABASE: names.database };
  const worker = new Worker(kind, paths, workerEnv, `${logDir}/${names.queue}.log`);
  try {
    await sleep(IDLE_SETTLE_SECONDS * 1000);
    worker.assertRunning();
    const redisCounter = await services.countRedisRoundTrips();
    const before = await snapshot(services, null, [worker]);
    await sleep(seconds * 1000);
    const after = await snapshot(services, null, [worker]);
    const counted = subtractCounts(after.requests, before.requests);
    const requests = { cosmos: counted.cosmos, queue: counted.queue, redis: redisCounter.stop() };
    worker.assertRunning();
    const wall = (after.at - before.at) / 1000;
    const perSecond = (kinds) => Object.values(kinds).reduce((a, b) => a + b, 0) / wall;
    return {
      kind,
      seconds: wall,
      cores: cpuCores(before, after, wall).workers[0],
      receivesPerSecond: (requests.queue["message.receive"] ?? 0) / wall,
      requestsPerSecond: { cosmos: perSecond(requests.cosmos), queue: perSecond(requests.queue), redis: perSecond(requests.redis) },
      requests,
      peakRssMiB: peakRssMiB(worker.pid),
    };
  } finally {
    await worker.stop();
    await services.deleteResources(resources);
  }
}
