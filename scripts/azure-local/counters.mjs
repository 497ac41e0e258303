// Request counters of the local stand-ins, served at GET /_flowcraft/stats
// (and zeroed by POST /_flowcraft/stats/reset) so that benchmarks can count
// backend requests at the services. Shared by cosmos-server.mjs and
// queue-server.mjs.

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
