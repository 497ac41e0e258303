// The benchmark's one table: rows of (section, metric, flowcraft-host, TS reference, host/TS, goal,
// verdict) built from the measurements, printed as aligned text and written as markdown.

const GOALS = {
  throughput: { text: "host/TS ≥ 5", met: (r) => r.ratio >= 5 },
  requests: { text: "host/TS ≤ 1/3", met: (r) => r.ratio <= 1 / 3 },
  cpu: { text: "host/TS ≤ 1/5", met: (r) => r.ratio <= 1 / 5 },
  rss: { text: "host/TS ≤ 1/3", met: (r) => r.ratio <= 1 / 3 },
  embedded: { text: "host/TS ≥ 3", met: (r) => r.ratio >= 3 },
  noWrongRuns: { text: "host: 0 wrong", met: (r) => r.hostWrong === 0 },
  allCorrect: { text: "all correct", met: (r) => r.notCorrect === 0 && r.correct > 0 },
  idleCores: { text: "host ≤ 0.02", met: (r) => r.host <= 0.02 },
  idleReceives: { text: "host ≤ 10", met: (r) => r.host <= 10 },
  latencyBackToBack: { text: "host/TS ≤ 1/6", met: (r) => r.ratio <= 1 / 6 },
  latencyAfterIdle: { text: "host/TS ≤ 1", met: (r) => r.ratio <= 1 },
  latencyStartWait: { text: "host ≤ 1/2 × TS after-idle p50", met: (r) => r.ratio <= 1 / 2 },
};

export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value === "string") return value;
  const magnitude = Math.abs(value);
  if (magnitude >= 100) return value.toFixed(0);
  if (magnitude >= 10) return value.toFixed(1);
  if (magnitude >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

/** A row comparing two figures; `goal` names an entry of GOALS, `extra` holds what its test needs. */
function row(section, metric, host, ts, goal, extra = {}) {
  const ratio = typeof host === "number" && typeof ts === "number" && ts !== 0 ? host / ts : null;
  const entry = { section, metric, host, ts, ratio, ...extra };
  if (goal) {
    entry.goal = GOALS[goal].text;
    const needsRatio = !["idleCores", "idleReceives", "noWrongRuns", "allCorrect"].includes(goal);
    entry.verdict = needsRatio && ratio === null ? "n/a" : GOALS[goal].met(entry) ? "met" : "MISSED";
  }
  return entry;
}

const outcomeText = (o) => (o ? `${o.correct} / ${o.wrong} / ${o.stuck}` : "–");

/** Which process used the most CPU in a window (the likely saturated one), e.g. "cosmos 0.97". */
function busiest(measurement) {
  const { services, workers, machine } = measurement.cpuCores;
  const candidates = [...Object.entries(services), ...workers.map((cores, i) => [`worker ${i + 1}`, cores])];
  const [name, cores] = candidates.sort((a, b) => b[1] - a[1])[0];
  return `${name} ${formatNumber(cores)}, machine ${formatNumber(machine)}`;
}

function distributedRows({ workload, workers, host, ts }) {
  const section = `${workload} ×${workers}`;
  const first = workers === 1;
  const rows = [
    row(section, "runs/s", host.runsPerSecond, ts.runsPerSecond),
    row(section, "node-jobs/s", host.nodeJobsPerSecond, ts.nodeJobsPerSecond, first && ["chain-10", "fan-8"].includes(workload) ? "throughput" : null),
    row(section, "run latency p50 (ms)", host.latencyMs.p50, ts.latencyMs.p50),
    row(section, "run latency p95 (ms)", host.latencyMs.p95, ts.latencyMs.p95),
    row(section, "worker CPU-s / 1000 node-jobs", host.workerCpuSecondsPer1000NodeJobs, ts.workerCpuSecondsPer1000NodeJobs, first ? "cpu" : null),
    row(section, "worker peak RSS (MiB)", host.peakRssMiB, ts.peakRssMiB, first ? "rss" : null),
    row(section, "requests / node-job", host.requestsPerNodeJob?.total, ts.requestsPerNodeJob?.total, first ? "requests" : null),
  ];
  for (const service of ["cosmos", "queue", "redis"]) {
    rows.push(row(section, `  ${service}`, host.requestsPerNodeJob?.[service]?.total ?? 0, ts.requestsPerNodeJob?.[service]?.total ?? 0));
    if (!first) continue;
    const kinds = new Set([
      ...Object.keys(host.requestsPerNodeJob?.[service]?.byKind ?? {}),
      ...Object.keys(ts.requestsPerNodeJob?.[service]?.byKind ?? {}),
    ]);
    for (const kind of [...kinds].sort()) {
      rows.push(
        row(section, `    ${service} ${kind}`, host.requestsPerNodeJob?.[service]?.byKind[kind] ?? 0, ts.requestsPerNodeJob?.[service]?.byKind[kind] ?? 0),
      );
    }
  }
  const scriptCommands = (m) => Object.values(m.redisCommandsInclScripts).reduce((a, b) => a + b, 0) / m.nodeJobs;
  rows.push(row(section, "  (redis commands incl. those scripts run)", scriptCommands(host), scriptCommands(ts)));
  const hostWrong = host.outcomes.wrong + host.outcomes.stuck;
  rows.push(row(section, "runs correct / wrong / stuck", outcomeText(host.outcomes), outcomeText(ts.outcomes), "noWrongRuns", { hostWrong }));
  const cores = (m) => {
    const s = m.cpuCores.services;
    return `${formatNumber(s.queue)} / ${formatNumber(s.cosmos)} / ${formatNumber(s.redis)}`;
  };
  rows.push(row(section, "service cores queue / cosmos / redis", cores(host), cores(ts)));
  rows.push(row(section, "driver cores, other processes' cores", `${formatNumber(host.cpuCores.driver)}, ${formatNumber(host.cpuCores.other)}`, `${formatNumber(ts.cpuCores.driver)}, ${formatNumber(ts.cpuCores.other)}`));
  rows.push(row(section, "busiest process (cores)", busiest(host), busiest(ts)));
  return rows;
}

/** True when the machine's cores or one service's thread were (nearly) used up in a window. */
function saturated(measurement, cores) {
  const { services, machine } = measurement.cpuCores;
  return machine >= 0.9 * cores || Object.values(services).some((serviceCores) => serviceCores >= 0.9);
}

function scalingRows(distributed, cores) {
  const rows = [];
  for (const three of distributed.filter((d) => d.workers === 3)) {
    const one = distributed.find((d) => d.workers === 1 && d.workload === three.workload);
    if (!one) continue;
    const scale = (side) => three[side].nodeJobsPerSecond / one[side].nodeJobsPerSecond;
    const entry = row(`${three.workload} scaling`, "node-jobs/s: 3 workers ÷ 1", scale("host"), scale("ts"));
    entry.goal = "host ≥ 2.5 unless a service saturates";
    if (entry.host >= 2.5) entry.verdict = "met";
    else if (saturated(three.host, cores)) entry.verdict = `saturated (3 workers: ${busiest(three.host)} of ${cores})`;
    else entry.verdict = `MISSED (3 workers: ${busiest(three.host)} of ${cores})`;
    rows.push(entry);
  }
  return rows;
}

function embeddedRows(embedded) {
  const rows = [];
  for (const e of embedded) {
    const section = `embedded ${e.workload}`;
    rows.push(row(section, "nodes/s (run only, without start-up)", e.host.nodesPerSecond, e.ts.nodesPerSecond, "embedded"));
    rows.push(row(section, "run wall (ms, without start-up)", e.host.runMs, e.ts.runMs));
    rows.push(row(section, "CPU ms / 1000 nodes (without start-up)", e.host.cpuMsPer1000Nodes, e.ts.cpuMsPer1000Nodes));
    rows.push(row(section, "whole process: wall / CPU (ms)", `${formatNumber(e.host.wallMs)} / ${formatNumber(e.host.cpuMs)}`, `${formatNumber(e.ts.wallMs)} / ${formatNumber(e.ts.cpuMs)}`));
    rows.push(row(section, "one-node run, whole process (ms)", e.host.startupWallMs, e.ts.startupWallMs));
  }
  return rows;
}

function mixedRows(mixed) {
  const rows = [];
  for (const m of mixed) {
    const section = `mixed ${m.workload} (1 TS + 1 host)`;
    const { correct, wrong, stuck } = m.outcomes;
    const goal = m.workload === "chain-10" ? "allCorrect" : null;
    rows.push(row(section, "runs correct / wrong / stuck (fleet)", outcomeText(m.outcomes), "", goal, { correct, notCorrect: wrong + stuck }));
    rows.push(row(section, "node-jobs/s (fleet)", m.nodeJobsPerSecond, ""));
    const coresOf = (kind) => m.cpuCores.workers[m.fleet.findIndex((worker) => worker.kind === kind)];
    rows.push(row(section, "worker cores", formatNumber(coresOf("host")), formatNumber(coresOf("ts"))));
  }
  return rows;
}

function idleRows(idle) {
  const section = "idle worker, empty queue";
  return [
    row(section, "CPU cores", idle.host.cores, idle.ts.cores, "idleCores"),
    row(section, "queue receive calls/s", idle.host.receivesPerSecond, idle.ts.receivesPerSecond, "idleReceives"),
    row(section, "cosmos requests/s", idle.host.requestsPerSecond.cosmos, idle.ts.requestsPerSecond.cosmos),
    row(section, "redis commands/s", idle.host.requestsPerSecond.redis, idle.ts.requestsPerSecond.redis),
  ];
}

/** Outcome counts summed over series (`{correct, wrong, stuck}` each). */
function addOutcomes(series) {
  const sum = { correct: 0, wrong: 0, stuck: 0 };
  for (const { outcomes } of series) for (const key of Object.keys(sum)) sum[key] += outcomes[key];
  return sum;
}

/**
 * The latency section: p50 and p95 of each series, host beside TS; for the host's CLI `start --wait`
 * the TS column is the TS worker's after-idle p50, the figure its goal compares with.
 */
function latencyRows({ host, ts }) {
  const rows = [];
  for (const h of host.backToBack) {
    const t = ts.backToBack.find((series) => series.workload === h.workload);
    const section = `latency ${h.workload} back to back`;
    rows.push(row(section, "p50 (ms)", h.p50, t?.p50, "latencyBackToBack"));
    rows.push(row(section, "p95 (ms)", h.p95, t?.p95));
  }
  const idle = `latency ${host.afterIdle.workload} after ${host.afterIdle.idleSeconds} s idle`;
  rows.push(row(idle, "p50 (ms)", host.afterIdle.p50, ts.afterIdle.p50, "latencyAfterIdle"));
  rows.push(row(idle, "p95 (ms)", host.afterIdle.p95, ts.afterIdle.p95));
  if (host.cli) {
    const { oneProcess, twoProcesses } = host.cli;
    const section = `latency ${oneProcess.workload} CLI after ${oneProcess.idleSeconds} s idle`;
    rows.push(row(section, "start --wait p50 (ms); TS: after-idle run p50", oneProcess.p50, ts.afterIdle.p50, "latencyStartWait"));
    rows.push(row(section, "start --wait p95 (ms)", oneProcess.p95, ""));
    rows.push(row(section, "start, then wait: p50 (ms)", twoProcesses.p50, ""));
    rows.push(row(section, "  start process / wait process p50 (ms)", `${formatNumber(twoProcesses.startProcessMsP50)} / ${formatNumber(twoProcesses.waitProcessMsP50)}`, ""));
  }
  if (host.viaServer) {
    const section = `latency ${host.viaServer.workload} CLI through serve after ${host.viaServer.idleSeconds} s idle`;
    rows.push(row(section, "start --server --wait p50 (ms); TS: after-idle run p50", host.viaServer.p50, ts.afterIdle.p50));
    rows.push(row(section, "start --server --wait p95 (ms)", host.viaServer.p95, ""));
  }
  const series = (side) => [
    ...side.backToBack,
    side.afterIdle,
    ...(side.cli ? [side.cli.oneProcess, side.cli.twoProcesses] : []),
    ...(side.viaServer ? [side.viaServer] : []),
  ];
  const hostOutcomes = addOutcomes(series(host));
  const tsOutcomes = addOutcomes(series(ts));
  rows.push(row("latency runs", "runs correct / wrong / stuck", outcomeText(hostOutcomes), outcomeText(tsOutcomes), "noWrongRuns", { hostWrong: hostOutcomes.wrong + hostOutcomes.stuck }));
  return rows;
}

export function buildRows(results) {
  return [
    ...results.distributed.flatMap(distributedRows),
    ...scalingRows(results.distributed, results.machine.cores),
    ...(results.mixed ? mixedRows(results.mixed) : []),
    ...(results.idle ? idleRows(results.idle) : []),
    ...(results.latency ? latencyRows(results.latency) : []),
    ...(results.embedded ? embeddedRows(results.embedded) : []),
  ];
}

const HEADER = ["section", "metric", "flowcraft-host", "TS reference", "host/TS", "goal", "verdict"];

function cells(r) {
  return [r.section, r.metric, formatNumber(r.host), formatNumber(r.ts), r.ratio === null ? "" : formatNumber(r.ratio), r.goal ?? "", r.verdict ?? ""];
}

/** The rows as aligned text, a blank line between sections. */
export function formatText(rows) {
  const table = [HEADER, ...rows.map(cells)];
  const widths = HEADER.map((_, i) => Math.max(...table.map((c) => c[i].length)));
  const numeric = new Set([2, 3, 4]);
  const line = (c) => c.map((text, i) => (numeric.has(i) ? text.padStart(widths[i]) : text.padEnd(widths[i]))).join("  ").trimEnd();
  const out = [line(HEADER), widths.map((w) => "-".repeat(w)).join("  ")];
  let section = null;
  for (const r of rows) {
    if (section !== null && r.section !== section) out.push("");
    section = r.section;
    out.push(line(cells(r)));
  }
  return out.join("\n");
}

/** The rows as a markdown table. */
export function formatMarkdown(rows) {
  const escape = (text) => text.replaceAll("|", "\\|");
  const out = [`| ${HEADER.join(" | ")} |`, `|${HEADER.map((_, i) => (i >= 2 && i <= 4 ? "---:" : "---")).join("|")}|`];
  for (const r of rows) out.push(`| ${cells(r).map(escape).join(" | ")} |`);
  return out.join("\n");
}
