// Fault injection for the local stand-in wrappers (cosmos-server.mjs, queue-server.mjs), so that the
// fault-injection suite (host/cli/tests/faults) can make a service misbehave on demand without losing
// its in-memory data:
//
//   POST   /_flowcraft/faults  {"rules": [rule, ...]}   replace the rules (answers the previous counts)
//   GET    /_flowcraft/faults                            the rules and what they injected so far
//   DELETE /_flowcraft/faults                            remove every rule (answers the counts)
//
// A rule applies to requests whose kind (the counters' kind, e.g. "doc.patch", "message.receive")
// starts with `match` ("" or absent: every request) and whose URL path contains `path` (if given):
//   {"effect": "status", "status": 429, "headers": {"x-ms-retry-after-ms": "100"}}
//        answer with that status (and headers) instead of serving the request; the service's own error
//        body format is used (JSON for Cosmos, XML for the queue), code `code` (default per status);
//   {"effect": "reset"}
//        destroy the connection without an answer (an unreachable service, as seen by a client);
//   {"effect": "duplicate", "minDelayMs": 0, "maxDelayMs": 300}
//        (queue only, requests that enqueue work: message sends, and updates that replace a message's
//        text) serve the request, then store a message with the same text once more after a random
//        delay in [minDelayMs, maxDelayMs]: every job is delivered twice, in an arbitrary order.
// and, optionally, for at most `count` requests, during `forMs` milliseconds from now, to every
// `every`-th matching request (default 1), or with probability `probability` (0..1).

export class Faults {
  constructor() {
    this.rules = [];
    this.injected = {};
  }

  /** Replaces the rules; answers what the old ones injected. */
  configure(rules) {
    if (!Array.isArray(rules)) throw new Error("expected {\"rules\": [...]}");
    const before = this.snapshot();
    const now = Date.now();
    this.rules = rules.map((rule, index) => {
      if (!["status", "reset", "duplicate"].includes(rule.effect)) {
        throw new Error(`rule ${index}: effect must be status, reset or duplicate`);
      }
      if (rule.effect === "status" && !Number.isInteger(rule.status)) {
        throw new Error(`rule ${index}: effect status needs an integer "status"`);
      }
      return {
        ...rule,
        match: rule.match ?? "",
        until: Number.isFinite(rule.forMs) ? now + rule.forMs : Infinity,
        remaining: Number.isInteger(rule.count) ? rule.count : Infinity,
        seen: 0,
      };
    });
    this.injected = {};
    return before;
  }

  clear() {
    return this.configure([]);
  }

  /**
   * The rule to apply to a request of `kind` at `path`, if any (and counts it as injected); `enqueues`
   * says whether the request stores a job (only those can be duplicated).
   */
  pick(kind, path, enqueues = false) {
    const now = Date.now();
    for (const rule of this.rules) {
      if (!kind.startsWith(rule.match) || (rule.path && !path.includes(rule.path))) continue;
      if (rule.effect === "duplicate" && !enqueues) continue;
      if (rule.remaining <= 0 || now > rule.until) continue;
      rule.seen += 1;
      if (rule.every && rule.seen % rule.every !== 0) continue;
      if (rule.probability !== undefined && Math.random() >= rule.probability) continue;
      rule.remaining -= 1;
      const key = `${kind} ${rule.effect === "status" ? rule.status : rule.effect}`;
      this.injected[key] = (this.injected[key] ?? 0) + 1;
      return rule;
    }
    return undefined;
  }

  snapshot() {
    const total = Object.values(this.injected).reduce((a, b) => a + b, 0);
    return {
      rules: this.rules.map(({ until, remaining, seen, ...rule }) => ({
        ...rule,
        remaining: remaining === Infinity ? null : remaining,
      })),
      injected: { ...this.injected },
      total,
    };
  }

  /**
   * Serves the control endpoint if `req` is for it (answers true), with `readJson(req)` reading the body
   * and `sendJson(res, status, body)` answering.
   */
  async control(req, res, pathname, readJson, sendJson) {
    if (pathname !== "/_flowcraft/faults") return false;
    try {
      if (req.method === "GET") sendJson(res, 200, this.snapshot());
      else if (req.method === "DELETE") sendJson(res, 200, this.clear());
      else if (req.method === "POST") sendJson(res, 200, this.configure((await readJson(req)).rules));
      else sendJson(res, 405, { message: "use GET, POST or DELETE" });
    } catch (err) {
      sendJson(res, 400, { message: err.message });
    }
    return true;
  }
}

/** Applies a `reset` or `status` rule to `res`; `errorBody(status, code)` formats the service's error. */
export function injectFailure(rule, req, res, errorBody) {
  if (rule.effect === "reset") {
    req.socket.destroy();
    return;
  }
  const code = rule.code ?? DEFAULT_CODES[rule.status] ?? "InjectedFault";
  const { contentType, body } = errorBody(rule.status, code);
  res.statusCode = rule.status;
  for (const [name, value] of Object.entries(rule.headers ?? {})) res.setHeader(name, String(value));
  res.setHeader("content-type", contentType);
  res.end(body);
}

const DEFAULT_CODES = {
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServerBusy",
};
