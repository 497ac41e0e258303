// Processes of a measurement: starting and stopping the workers of either implementation, and
// reading CPU time and peak memory of any process from /proc.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { openSync, readFileSync } from "node:fs";

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ; the kernel reports utime/stime in these on Linux

/** CPU seconds (user + system) a process has used so far, or null once it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineCpuSeconds() {
  const [cpu] = readFileSync("/proc/stat", "utf8").split("\n");
  const ticks = cpu.split(/\s+/).slice(1).map(Number);
  const idle = ticks[3] + ticks[4]; // idle + iowait
  const total = ticks.slice(0, 8).reduce((sum, t) => sum + t, 0); // without guest time (counted in user)
  return { busy: (total - idle) / CLOCK_TICKS_PER_SECOND, total: total / CLOCK_TICKS_PER_SECOND };
}

/** Peak resident set size (VmHWM) of a process in MiB, or null once it is gone. */
export function peakRssMiB(pid) {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** The two worker implementations, each started the way its users start it, and `serve` (the host's
 * worker with its HTTP API on `options.port`). */
export const implementations = {
  host: {
    label: "flowcraft-host",
    command: (paths, options) => [
      paths.hostBinary,
      ["--plugins", paths.plugins, "--blueprints", paths.blueprints, ...(options.mixedFleet ? ["--mixed-fleet"] : [])],
    ],
  },
  serve: {
    label: "flowcraft-host serve",
    command: (paths, options) => [
      paths.hostBinary,
      ["serve", "--listen", `127.0.0.1:${options.port}`, "--plugins", paths.plugins, "--blueprints", paths.blueprints],
    ],
  },
  ts: {
    label: "TS reference",
    command: (paths) => [process.execPath, [paths.tsWorker, "--blueprints", paths.blueprints]],
  },
};

/** A started worker process; its output goes to `logFile`. */
export class Worker {
  constructor(kind, paths, env, logFile, options = {}) {
    const [command, args] = implementations[kind].command(paths, options);
    const log = openSync(logFile, "a");
    this.kind = kind;
    this.logFile = logFile;
    // Warnings only (as the TS worker logs), unless BENCH_WORKER_LOG asks for more (e.g. `info`).
    const logFilter = env.BENCH_WORKER_LOG ?? "warn";
    this.child = spawn(command, args, { env: { ...env, FLOWCRAFT_LOG: logFilter }, stdio: ["ignore", log, log] });
    this.exited = once(this.child, "exit");
  }

  get pid() {
    return this.child.pid;
  }

  /** Throws if the worker has died (its log says why). */
  assertRunning() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) {
      throw new Error(`a ${this.kind} worker exited (${this.child.exitCode ?? this.child.signalCode}); see ${this.logFile}`);
    }
  }

  /** Asks the worker to stop (SIGTERM) and waits for it, killing it after 10 s. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
