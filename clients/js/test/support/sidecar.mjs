// A real wsgate sidecar for the browser test: its own temp dir (database,
// audit key, 64-hex JWT secret, ipc:// sockets), a free loopback port, and
// wsgatectl for tokens and events. Stopped and restarted by pid, on the same
// port and database.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A port nobody listens on right now (loopback). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` (async, truthy when done) until it holds or `ms` pass. */
export async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Sidecar {
  /**
   * @param {object} o
   * @param {string} o.buildDir  where wsgate and wsgatectl are
   * @param {string} o.dir       an empty temp dir of its own
   * @param {string[]} [o.flags] extra sidecar flags
   */
  constructor({ buildDir, dir, flags = [] }) {
    this.wsgate = join(buildDir, 'wsgate');
    this.wsgatectl = join(buildDir, 'wsgatectl');
    for (const f of [this.wsgate, this.wsgatectl]) {
      if (!existsSync(f)) throw new Error(`${f} is missing: build first (make build)`);
    }
    this.dir = dir;
    this.flags = flags;
    this.secretFile = join(dir, 'jwt-secret');
    this.otherSecretFile = join(dir, 'other-secret');
    this.auditKeyFile = join(dir, 'audit-key');
    this.db = join(dir, 'wsgate.db');
    this.control = `ipc://${join(dir, 'control.ipc')}`;
    this.inbound = `ipc://${join(dir, 'inbound.ipc')}`;
    writeFileSync(this.secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    writeFileSync(this.otherSecretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    this.logFile = join(dir, 'wsgate.log');
    this.log = createWriteStream(this.logFile, { flags: 'a' });
    this.proc = undefined;
    this.port = undefined;
    this.starts = 0;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Starts the sidecar (on a fresh free port the first time, the same one after) and waits for /healthz. */
  async start() {
    this.port ??= await freePort();
    const args = [
      '--listen', `127.0.0.1:${this.port}`,
      '--db', this.db,
      '--control', this.control,
      '--inbound', this.inbound,
      '--jwt-secret-file', this.secretFile,
      '--audit-key-file', this.auditKeyFile,
      ...this.flags,
    ];
    const proc = spawn(this.wsgate, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.starts++;
    this.log.write(`--- start ${this.starts}: ${this.wsgate} ${args.join(' ')}\n`);
    proc.stdout.pipe(this.log, { end: false });
    proc.stderr.pipe(this.log, { end: false });
    proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.proc = proc;
    let exit;
    proc.exited.then((e) => (exit = e));
    await until('the sidecar to serve /healthz', 10000, async () => {
      if (exit) throw new Error(`wsgate exited ${JSON.stringify(exit)} at start; see ${this.logFile}`);
      try {
        return (await fetch(`http://127.0.0.1:${this.port}/healthz`)).status === 200;
      } catch {
        return false;
      }
    });
  }

  /** Stops it with `signal` (SIGTERM: drain with 1001; SIGKILL: a crash) and waits for the exit. */
  async stop(signal = 'SIGTERM') {
    const proc = this.proc;
    if (!proc) return;
    this.proc = undefined;
    proc.kill(signal);
    let timer;
    const exit = await Promise.race([
      proc.exited,
      new Promise((r) => (timer = setTimeout(() => r(undefined), 15000))),
    ]);
    clearTimeout(timer);
    if (!exit) {
      proc.kill('SIGKILL');
      await proc.exited;
      throw new Error(`wsgate did not exit within 15 s of ${signal}`);
    }
    return exit;
  }

  async ctl(...args) {
    const { stdout } = await run(this.wsgatectl, [
      '--control', this.control,
      '--db', this.db,
      '--audit-key-file', this.auditKeyFile,
      ...args,
    ]);
    return stdout;
  }

  /** An HS256 token; `bad` signs it with a secret the sidecar does not know. */
  async token(user, ttlS, { bad = false } = {}) {
    const { stdout } = await run(this.wsgatectl, [
      'token', '--user', user, '--ttl', String(ttlS),
      '--secret-file', bad ? this.otherSecretFile : this.secretFile,
    ]);
    return stdout.trim();
  }

  /** Sends one event with wsgatectl; returns its EventResult (seq, connections, retained, ...). */
  async send(user, type, { run = 'r1', thread = 't1', payload } = {}) {
    const args = ['--json', 'send', '--user', user, '--type', type, '--run', run, '--thread', thread];
    if (payload !== undefined) args.push('--payload', JSON.stringify(payload));
    const out = JSON.parse(await this.ctl(...args));
    if (out.status !== 'OK') throw new Error(`send refused: ${JSON.stringify(out)}`);
    return out;
  }
}
