'use strict';
// The service's Redis side, wired the way a production NestJS + BullMQ service wires
// it: a health connection that fails fast (no offline queue), a queue connection with
// ioredis's command timeout, one BullMQ Queue and Worker per queue, every Redis error
// event logged. Nothing here is made faster or cleaner than in production: start-up
// errors, timeouts and reconnect backoffs are ioredis's and BullMQ's own.

const net = require('net');
const IORedis = require('ioredis');

/**
 * A slow path to Redis (slow DNS, a TLS handshake across regions): a local TCP relay
 * that accepts at once but passes no byte either way until `delayMs` after start. The
 * clients behind it are connected but not ready, so a PING on a client without an
 * offline queue fails with ioredis's own "Stream isn't writeable ..." until then.
 * Returns the URL to use instead of `redisUrl`.
 */
function slowPath(redisUrl, delayMs) {
  const target = new URL(redisUrl);
  const host = target.hostname;
  const port = Number(target.port || 6379);
  const openAt = Date.now() + delayMs;
  const relay = net.createServer((client) => {
    client.pause();
    const wait = Math.max(0, openAt - Date.now());
    setTimeout(() => {
      const upstream = net.connect(port, host, () => {
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      upstream.on('error', close);
      client.on('error', close);
      upstream.on('close', close);
      client.on('close', close);
    }, wait).unref();
  });
  relay.listen(0, '127.0.0.1');
  relay.unref();
  return new Promise((resolve) =>
    relay.on('listening', () => {
      const u = new URL(redisUrl);
      u.hostname = '127.0.0.1';
      u.port = String(relay.address().port);
      resolve({ url: u.toString(), relay });
    }),
  );
}
const { Queue, Worker, Job } = require('bullmq');

class Runtime {
  constructor(cfg, logs) {
    this.cfg = cfg;
    this.logs = logs;

    // Health: the offline queue is off so a PING while the connection is not ready
    // fails at once ("Stream isn't writeable ...") instead of waiting for a reconnect,
    // which is how health indicators in real services are set up.
    // The health and queue connections go through the slow path when one is set.
    // With Sentinel (cfg.sentinel) every connection asks the sentinels for the master
    // instead (ioredis's own Sentinel support), with the same options otherwise.
    const viaUrl = cfg.viaUrl || cfg.redisUrl;
    const connect = (opts) => (cfg.sentinel ? new IORedis({ ...cfg.sentinel, ...opts }) : new IORedis(viaUrl, opts));
    this.health = connect({
      enableOfflineQueue: false,
      commandTimeout: cfg.commandTimeoutMs,
      connectionName: 'health',
    });
    this.watch(this.health, 'Redis[health]');

    // Queues: the offline queue stays on (BullMQ's producer side needs it), so a call
    // while Redis is down waits for a reconnect until the command timeout fires.
    this.queueConn = connect({
      commandTimeout: cfg.commandTimeoutMs,
      connectionName: 'queues',
    });
    this.watch(this.queueConn, 'Redis[queues]');

    this.queues = new Map();
    for (const name of cfg.queues) {
      const q = new Queue(name, { connection: this.queueConn });
      // The Queue re-emits its connection's errors; `watch` above already logs them once.
      q.on('error', () => {});
      this.queues.set(name, q);
    }

    // Workers get their own connections from BullMQ (with its defaults: no command
    // timeout, maxRetriesPerRequest null, its exponential reconnect backoff). With
    // workers disabled they still connect (`autorun: false`) but never take a job:
    // the "workers connected but processing nothing" failure after a failover.
    this.workers = [];
    for (const name of cfg.queues) {
      const w = new Worker(name, (job) => this.process(name, job), {
        connection: cfg.sentinel ? { ...cfg.sentinel, connectionName: `worker:${name}` } : { url: cfg.redisUrl, connectionName: `worker:${name}` },
        concurrency: cfg.concurrency,
        autorun: cfg.workersEnabled,
      });
      w.on('error', (err) => logs.error(`Worker[${name}]`, `Worker error: ${err.message}`));
      w.on('failed', (job, err) => {
        if (job) logs.warn(`Worker[${name}]`, `Job ${job.id} in queue ${name} failed: ${err.message}`);
      });
      this.workers.push(w);
    }

    this.monitor = setInterval(() => this.pingOnce(), cfg.pingIntervalMs);
    // The first PING goes out now, before the connection can be ready: production
    // services log exactly this error at every start.
    this.pingOnce();
  }

  /** Logs a connection's lifecycle and every `error` event (e.g. ECONNREFUSED). */
  watch(client, context) {
    client.on('error', (err) => this.logs.error(context, `Redis connection error: ${err.message}`));
    client.on('ready', () => this.logs.info(context, 'Redis connection ready'));
    client.on('reconnecting', (ms) => this.logs.warn(context, `Redis reconnecting in ${ms} ms`));
  }

  pingOnce() {
    this.health.ping().catch((err) => this.logs.error('RedisMonitor', `Redis ping failed: ${err.message}`));
  }

  async process(queue, job) {
    await new Promise((r) => setTimeout(r, this.cfg.jobMs));
    if (job.data && job.data.fail === true) {
      throw new Error(job.data.failReason || 'Job failed: payload asked to fail');
    }
    return { ok: true, queue, processedBy: `Worker[${queue}]` };
  }

  /** PING on the health connection; rejects with ioredis's error. */
  ping() {
    return this.health.ping();
  }

  /** Per-queue counts; `waiting` includes paused and prioritized, as the sandbox's. */
  async counts() {
    const out = [];
    for (const [name, q] of this.queues) {
      const c = await q.getJobCounts('waiting', 'paused', 'prioritized', 'active', 'completed', 'failed');
      out.push([name, { waiting: c.waiting + c.paused + c.prioritized, active: c.active, completed: c.completed, failed: c.failed }]);
    }
    return out;
  }

  async add(queue, name, data) {
    const job = await this.queues.get(queue).add(name, data);
    return String(job.id);
  }

  /** The job's state in the sandbox's shape (`unknown` when the job does not exist). */
  async jobInfo(queue, id) {
    const q = this.queues.get(queue);
    // State first, then the job's hash: completing a job sets finishedOn in the same
    // script that moves it, so a hash read after "completed" always carries it (read
    // the other way round, a job finishing in between looked completed with no
    // finishedOn).
    let state = await q.getJobState(id);
    const job = await Job.fromId(q, id);
    if (!job) {
      return { id, queue, state: 'unknown', name: null, timestamp: null, processedOn: null, finishedOn: null };
    }
    // The sandbox reports the waiting family as one state.
    if (state === 'prioritized' || state === 'paused') state = 'waiting';
    const info = {
      id,
      queue,
      state,
      name: job.name ?? null,
      timestamp: job.timestamp ?? null,
      processedOn: job.processedOn ?? null,
      finishedOn: job.finishedOn ?? null,
    };
    if (job.failedReason) info.failedReason = job.failedReason;
    if (job.returnvalue !== undefined && job.returnvalue !== null) info.returnvalue = job.returnvalue;
    return info;
  }

  /**
   * Graceful close: workers finish their current jobs, queues close, connections
   * quit. A Redis that is down or frozen can make that wait forever, so the caller
   * bounds it and exits regardless.
   */
  async close() {
    clearInterval(this.monitor);
    await Promise.allSettled(this.workers.map((w) => w.close()));
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    await Promise.allSettled([this.health.quit(), this.queueConn.quit()]);
  }

  /** Drops every connection at once (after the grace of `close`). */
  disconnect() {
    for (const w of this.workers) w.disconnect().catch(() => {});
    for (const q of this.queues.values()) q.disconnect().catch(() => {});
    this.health.disconnect();
    this.queueConn.disconnect();
  }
}

module.exports = { slowPath, Runtime };
