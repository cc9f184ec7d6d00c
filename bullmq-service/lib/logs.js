'use strict';
// The process's in-memory application log: a bounded ring buffer behind
// `GET /api/v1/logs`, where the orchestrator looks for Redis errors the way the
// runbook's on-call engineer does. Same entry shape and filters as the Rust sandbox's
// `LogBuffer`, but no de-duplication: a real Node service logs every event it sees.

const LEVELS = ['error', 'warn', 'info', 'debug'];

class LogBuffer {
  /**
   * @param {number} capacity newest entries kept
   * @param {(text: string) => string} redact applied to every message before it is
   *   stored or printed, so a secret in an error text never leaves the process
   */
  constructor(capacity, redact) {
    this.capacity = capacity;
    this.redact = redact;
    this.entries = [];
  }

  push(level, context, message) {
    const entry = { timestamp: new Date().toISOString(), level, message: this.redact(String(message)), context };
    if (this.entries.length === this.capacity) {
      this.entries.shift();
    }
    this.entries.push(entry);
    // One JSON line per entry on stdout, like a JSON logger in production; the host
    // keeps it in a file for post-mortems.
    process.stdout.write(`${JSON.stringify(entry)}\n`);
  }

  error(context, message) {
    this.push('error', context, message);
  }

  warn(context, message) {
    this.push('warn', context, message);
  }

  info(context, message) {
    this.push('info', context, message);
  }

  /**
   * Matching entries, newest first, cut to `limit`, and how many matched before the cut.
   * @param {{level?: string, search: string[], since?: number, limit: number}} q
   *   `search`: case-insensitive substrings that must all occur; `since`: ms epoch
   */
  query(q) {
    const needles = q.search.map((s) => s.toLowerCase());
    const matching = [];
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i];
      if (q.level && e.level !== q.level) continue;
      if (q.since !== undefined && Date.parse(e.timestamp) < q.since) continue;
      const m = e.message.toLowerCase();
      if (!needles.every((n) => m.includes(n))) continue;
      matching.push(e);
    }
    return { data: matching.slice(0, q.limit), total: matching.length };
  }
}

module.exports = { LogBuffer, LEVELS };
