'use strict';
// The runbook's endpoints under /api/v1 on node's own `http` server, with the same
// paths, `X-API-Key` auth and JSON shapes as the Rust sandbox's service
// (`sandbox/src/service.rs`), since the orchestrator's client parses both.

const http = require('node:http');
const crypto = require('node:crypto');

const MAX_BODY = 1 << 20;
const REASONS = { 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 413: 'Payload Too Large', 500: 'Internal Server Error', 503: 'Service Unavailable' };

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A NestJS-style JSON error, as the sandbox answers. */
function error(res, status, message) {
  send(res, status, { statusCode: status, message, error: REASONS[status] || 'Error' });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('Body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** `p`, or a rejection after `ms` (the work itself goes on: BullMQ cannot cancel it). */
function withDeadline(p, ms) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No answer from Redis within ${ms} ms (connection not ready)`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

function sameKey(given, expected) {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/**
 * The request handler. `rt` is the Redis side (see runtime.js), `logs` the log buffer.
 * A handler never throws to node: an unexpected failure answers 500 and is logged.
 */
function handler(cfg, rt, logs) {
  const database = { status: 'up', message: 'Database is accessible and responsive' };
  const queueList = cfg.queues.join(', ');

  const authorized = (req, res) => {
    const key = req.headers['x-api-key'];
    if (key === undefined) {
      error(res, 401, 'Missing API key (X-API-Key header)');
      return false;
    }
    if (!sameKey(String(key), cfg.apiKey)) {
      error(res, 401, 'Invalid API key');
      return false;
    }
    return true;
  };

  async function health(res) {
    try {
      await rt.ping();
      const info = { database, redis: { status: 'up', message: 'Redis is accessible and responsive' } };
      send(res, 200, { status: 'ok', info, error: {}, details: info });
    } catch (err) {
      const message = `Redis ping failed: ${err.message}`;
      logs.error('HealthService', message);
      const down = { status: 'down', message: logs.redact(message) };
      send(res, 503, { status: 'error', info: { database }, error: { redis: down }, details: { database, redis: down } });
    }
  }

  async function metrics(res) {
    try {
      const perQueue = await withDeadline(rt.counts(), cfg.requestTimeoutMs);
      const queues = {};
      const total = { waiting: 0, active: 0, completed: 0, failed: 0 };
      for (const [name, c] of perQueue) {
        queues[name] = c;
        for (const k of Object.keys(total)) total[k] += c[k];
      }
      send(res, 200, {
        connection_status: 'connected',
        total_jobs: total.waiting + total.active + total.completed + total.failed,
        active_jobs: total.active,
        waiting_jobs: total.waiting,
        completed_jobs: total.completed,
        failed_jobs: total.failed,
        queues,
      });
    } catch (err) {
      logs.error('QueueService', `Failed to get queue metrics: ${err.message}`);
      const queues = {};
      for (const name of cfg.queues) queues[name] = { waiting: 0, active: 0, completed: 0, failed: 0 };
      send(res, 200, {
        connection_status: rt.queueConn.status === 'ready' ? 'error' : 'disconnected',
        total_jobs: 0,
        active_jobs: 0,
        waiting_jobs: 0,
        completed_jobs: 0,
        failed_jobs: 0,
        queues,
        error: logs.redact(err.message),
      });
    }
  }

  function logsQuery(res, params) {
    const q = { search: [], limit: 100 };
    for (const [k, v] of params) {
      if (k === 'level' && v !== '') q.level = v.toLowerCase();
      else if (k === 'search' && v !== '') q.search.push(v);
      else if (k === 'limit') {
        if (!/^\d+$/.test(v)) return error(res, 400, 'limit must be a positive integer');
        q.limit = Math.min(Math.max(Number(v), 1), logs.capacity);
      } else if (k === 'since') {
        const t = Date.parse(v);
        if (Number.isNaN(t)) return error(res, 400, 'since must be an RFC 3339 timestamp');
        q.since = t;
      }
      // Anything else (e.g. `follow=true` from the runbook) is accepted and ignored.
    }
    return send(res, 200, logs.query(q));
  }

  async function trigger(req, res, key, params) {
    const queue = params.get('queue') || 'default';
    if (!rt.queues.has(queue)) return error(res, 400, `queue must be one of ${queueList}`);
    const raw = await readBody(req);
    let data = {};
    if (raw.trim() !== '') {
      try {
        data = JSON.parse(raw);
      } catch (err) {
        return error(res, 400, `Body is not valid JSON: ${err.message}`);
      }
    }
    try {
      const jobId = await withDeadline(rt.add(queue, key, data), cfg.requestTimeoutMs);
      return send(res, 201, { jobId, queue, status: 'queued' });
    } catch (err) {
      logs.error('TriggersController', `Failed to enqueue job ${key}: ${err.message}`);
      return error(res, 503, logs.redact(`Queue unavailable: ${err.message}`));
    }
  }

  async function job(res, queue, id) {
    if (!rt.queues.has(queue)) return error(res, 404, `Unknown queue (${queueList})`);
    try {
      return send(res, 200, await withDeadline(rt.jobInfo(queue, id), cfg.requestTimeoutMs));
    } catch (err) {
      logs.error('JobsController', `Failed to read job ${id}: ${err.message}`);
      return error(res, 503, logs.redact(`Queue unavailable: ${err.message}`));
    }
  }

  async function route(req, res) {
    const url = new URL(req.url, 'http://service');
    const path = url.pathname;
    const method = req.method;
    let m;
    if (method === 'GET' && path === '/api/v1/health') return health(res);
    if (method === 'GET' && path === '/api/v1/health/liveness') {
      // The process answers, whatever Redis does: what a platform's health check sees.
      return send(res, 200, { status: 'ok', timestamp: new Date().toISOString() });
    }
    if (method === 'GET' && path === '/api/v1/queue/metrics') return authorized(req, res) && metrics(res);
    if (method === 'GET' && path === '/api/v1/logs') return authorized(req, res) && logsQuery(res, url.searchParams);
    if (method === 'POST' && (m = /^\/api\/v1\/triggers\/([^/]+)$/.exec(path))) {
      return authorized(req, res) && trigger(req, res, decodeURIComponent(m[1]), url.searchParams);
    }
    if (method === 'GET' && (m = /^\/api\/v1\/jobs\/([^/]+)\/([^/]+)$/.exec(path))) {
      return authorized(req, res) && job(res, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    }
    return error(res, 404, `Cannot ${method} ${path}`);
  }

  return (req, res) => {
    route(req, res).catch((err) => {
      if (err && err.status === 413) return error(res, 413, 'Body too large');
      logs.error('HttpServer', `Unhandled error on ${req.method} ${req.url}: ${err && err.stack ? err.stack : err}`);
      if (!res.headersSent) error(res, 500, 'Internal server error');
      else res.destroy();
    });
  };
}

function createServer(cfg, rt, logs) {
  const server = http.createServer(handler(cfg, rt, logs));
  // Idle keep-alive sockets must not hold up a SIGTERM shutdown.
  server.keepAliveTimeout = 1000;
  return server;
}

module.exports = { createServer };
