'use strict';
// The service's configuration from its environment, validated once at start-up, and
// the helpers that keep the Redis password out of everything it prints.

const DEFAULT_QUEUES = 'critical,default,bulk';

class ConfigError extends Error {}

function bool(name, raw, dflt) {
  if (raw === undefined || raw === '') return dflt;
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

function int(name, raw, dflt, min) {
  if (raw === undefined || raw === '') return dflt;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw.trim());
  if (n < min) throw new ConfigError(`${name} must be at least ${min}`);
  return n;
}

function required(env, name) {
  const v = env[name];
  if (v === undefined || v === '') throw new ConfigError(`${name} is required`);
  return v;
}

/** The URL with its password replaced by `***`. */
function maskUrl(raw) {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<invalid url>';
  }
}

/** A function removing `secret` (raw and percent-decoded) from text. */
function redactor(secret) {
  if (!secret) return (text) => text;
  const forms = new Set([secret]);
  try {
    forms.add(decodeURIComponent(secret));
  } catch {
    // Not valid percent-encoding: the raw form is all there is.
  }
  return (text) => {
    let out = text;
    for (const f of forms) if (f) out = out.split(f).join('***');
    return out;
  };
}

/**
 * `REDIS_SENTINELS` (`host:port,host:port,...`) as ioredis's `sentinels` list, or null
 * when unset.
 */
function sentinelList(raw) {
  if (raw === undefined || raw.trim() === '') return null;
  const out = [];
  for (const item of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(.+):(\d+)$/.exec(item);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) throw new ConfigError(`REDIS_SENTINELS entries must be host:port, got ${JSON.stringify(item)}`);
    out.push({ host: m[1].replace(/^\[(.*)\]$/, '$1'), port });
  }
  if (out.length === 0) throw new ConfigError('REDIS_SENTINELS names no sentinel');
  return out;
}

/** Reads and validates the environment; throws ConfigError (never echoing a secret). */
function load(env) {
  // With REDIS_SENTINELS every connection finds the master through those sentinels
  // (ioredis's own Sentinel support, `{ sentinels, name }`) instead of REDIS_URL;
  // REDIS_URL is then optional and only lends its username and password to the
  // connections to the master.
  const sentinels = sentinelList(env.REDIS_SENTINELS);
  const sentinelName = sentinels ? required(env, 'REDIS_SENTINEL_NAME') : null;
  const redisUrl = sentinels && (env.REDIS_URL === undefined || env.REDIS_URL === '') ? 'redis://sentinel-master' : required(env, 'REDIS_URL');
  let parsed;
  try {
    parsed = new URL(redisUrl);
  } catch {
    throw new ConfigError('REDIS_URL is not a valid URL');
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    throw new ConfigError(`REDIS_URL must be redis:// or rediss://, got ${parsed.protocol}//`);
  }
  const connectDelayMs = int('REDIS_CONNECT_DELAY_MS', env.REDIS_CONNECT_DELAY_MS, 0, 0);
  if (sentinels && connectDelayMs > 0) throw new ConfigError('REDIS_CONNECT_DELAY_MS is not supported with REDIS_SENTINELS');
  let sentinel = null;
  if (sentinels) {
    sentinel = { sentinels, name: sentinelName };
    if (parsed.username) sentinel.username = decodeURIComponent(parsed.username);
    if (parsed.password) sentinel.password = decodeURIComponent(parsed.password);
  }
  const sentinelDisplay = sentinels ? `sentinel ${sentinelName} via ${sentinels.map((s) => `${s.host}:${s.port}`).join(',')}` : null;
  const queues = (env.QUEUES || DEFAULT_QUEUES)
    .split(',')
    .map((q) => q.trim())
    .filter(Boolean);
  if (queues.length === 0) throw new ConfigError('QUEUES names no queue');
  for (const q of queues) {
    if (q.includes(':')) throw new ConfigError(`queue name ${JSON.stringify(q)} contains ':'`);
  }
  const secret = parsed.password || '';
  return {
    port: int('PORT', required(env, 'PORT'), 0, 1),
    host: env.HOST || '127.0.0.1',
    redisUrl,
    redisDisplay: sentinelDisplay || maskUrl(redisUrl),
    // `host:port` as ioredis names it in `connect ECONNREFUSED host:port`.
    redisHostPort: `${parsed.hostname || 'localhost'}:${parsed.port || 6379}`,
    // ioredis options `{ sentinels, name[, username, password] }` when REDIS_SENTINELS
    // is set (every connection then uses them instead of REDIS_URL), else null.
    sentinel,
    secret,
    apiKey: required(env, 'API_KEY'),
    workersEnabled: bool('WORKERS_ENABLED', env.WORKERS_ENABLED, true),
    jobMs: int('JOB_MS', env.JOB_MS, 20, 0),
    concurrency: int('WORKERS_PER_QUEUE', env.WORKERS_PER_QUEUE, 2, 1),
    queues,
    // ioredis's per-command deadline on the health and queue connections: the
    // runbook's 1 s ping timeout.
    commandTimeoutMs: int('COMMAND_TIMEOUT_MS', env.COMMAND_TIMEOUT_MS, 1000, 1),
    // Server-side deadline of the Redis-backed handlers. BullMQ waits for its
    // connection to be ready before the first command, without a timeout: a service
    // that booted while Redis was down hangs on /queue/metrics, /triggers and /jobs
    // until Redis answers. A proxy or timeout interceptor in front of a real service
    // ends such a request eventually; this is that end, set above the orchestrator's
    // request timeout so the hang is what it sees.
    requestTimeoutMs: int('REQUEST_TIMEOUT_MS', env.REQUEST_TIMEOUT_MS, 5000, 1),
    // How often the background monitor PINGs Redis.
    pingIntervalMs: int('PING_INTERVAL_MS', env.PING_INTERVAL_MS, 1000, 10),
    // The health and queue connections connect this long after start, as they do to a
    // remote Redis behind slow DNS or TLS: requests that arrive first meet a client
    // that is not ready (health 503, "Stream isn't writeable" logged).
    connectDelayMs,
    // Exit when the parent process goes (a test harness killed with SIGKILL must not
    // leave a service reconnecting forever).
    exitWithParent: bool('EXIT_WITH_PARENT', env.EXIT_WITH_PARENT, false),
  };
}

module.exports = { load, maskUrl, redactor, ConfigError };
