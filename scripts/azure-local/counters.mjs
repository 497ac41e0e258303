// Shared by the local stand-in wrappers (cosmos-server.mjs, queue-server.mjs):
// port parsing, and request counters served at GET /_flowcraft/stats
// (and zeroed by POST /_flowcraft/stats/reset) so that benchmarks can count
// backend requests at the services.

/** A TCP port from a command-line value, or an error naming it. */
export function portNumber(text) {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port ${text}`);
  return port;
}

export class Counters {
  constructor() { this.reset(); }

  reset() {
    this.since = new Date().toISOString();
    this.total = 0;
    this.byKind = {};
    this.byStatus = {};
    this.byKindStatus = {};
  }

  record(kind, status) {
    this.total += 1;
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    this.byStatus[status] = (this.byStatus[status] ?? 0) + 1;
    const key = `${kind} ${status}`;
    this.byKindStatus[key] = (this.byKindStatus[key] ?? 0) + 1;
  }

  snapshot(service) {
    return {
      service,
      since: this.since,
      now: new Date().toISOString(),
      total: this.total,
      byKind: { ...this.byKind },
      byStatus: { ...this.byStatus },
      byKindStatus: { ...this.byKindStatus },
    };
  }
}
