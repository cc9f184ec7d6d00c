'use strict';
// The BullMQ service: a real Node 20 + BullMQ + ioredis process behind the runbook's
// endpoints, so the orchestrator is tested against the start-up errors, timeouts and
// reconnects of a production service rather than the Rust sandbox's clean stand-in.
//
// Env: PORT, HOST (127.0.0.1), REDIS_URL, API_KEY, WORKERS_ENABLED (true), JOB_MS (20),
// WORKERS_PER_QUEUE (2), QUEUES (critical,default,bulk), COMMAND_TIMEOUT_MS (1000),
// PING_INTERVAL_MS (1000), REQUEST_TIMEOUT_MS (5000), EXIT_WITH_PARENT (false),
// REDIS_CONNECT_DELAY_MS (0: a slow path to Redis for the health and queue connections),
// REDIS_SENTINELS (host:port,...) + REDIS_SENTINEL_NAME: every connection finds the
// master through those sentinels (ioredis's Sentinel support); REDIS_URL then optional.
// SIGTERM/SIGINT close it gracefully within SHUTDOWN_GRACE_MS.

const { load, redactor, ConfigError } = require('./lib/config');
const { LogBuffer } = require('./lib/logs');
const { Runtime, slowPath } = require('./lib/runtime');
const { createServer } = require('./lib/http');

// A platform sends SIGKILL a little after SIGTERM; the host here after 2 s.
const SHUTDOWN_GRACE_MS = 1500;

async function main() {
  let cfg;
  try {
    cfg = load(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`bullmq-service: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logs = new LogBuffer(1000, redactor(cfg.secret));
  // Unexpected rejections are logged, not fatal: one bad request must not take the
  // service down (the default in Node 20 would exit).
  process.on('unhandledRejection', (err) => logs.error('Process', `Unhandled rejection: ${err && err.message ? err.message : err}`));

  if (cfg.connectDelayMs > 0) {
    cfg.viaUrl = (await slowPath(cfg.redisUrl, cfg.connectDelayMs)).url;
  }
  const rt = new Runtime(cfg, logs);
  const server = createServer(cfg, rt, logs);
  server.on('error', (err) => {
    logs.error('HttpServer', `HTTP server failed: ${err.message}`);
    process.exit(1);
  });
  server.listen(cfg.port, cfg.host, () => {
    const n = cfg.workersEnabled ? cfg.queues.length * cfg.concurrency : 0;
    logs.info('ServiceBootstrap', `Service started with Redis ${cfg.redisDisplay} (${n} workers)`);
    logs.info('ServiceBootstrap', `Listening on http://${cfg.host}:${server.address().port}`);
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    logs.info('ServiceBootstrap', `${signal}: closing workers and queues`);
    // The exit is guaranteed: a dead or frozen Redis can hold a graceful close forever.
    setTimeout(() => {
      logs.warn('ServiceBootstrap', `Graceful close exceeded ${SHUTDOWN_GRACE_MS} ms: exiting`);
      rt.disconnect();
      process.exit(0);
    }, SHUTDOWN_GRACE_MS).unref();
    server.close();
    server.closeIdleConnections();
    rt.close().finally(() => {
      logs.info('ServiceBootstrap', 'Closed');
      process.exit(0);
    });
  };
  if (cfg.exitWithParent) {
    const parent = process.ppid;
    setInterval(() => process.ppid !== parent && stop('parent exited'), 500).unref();
  }
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`bullmq-service: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
