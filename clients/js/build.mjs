// Builds dist/: an ES module (wsgate.mjs), an IIFE that defines the global
// `Wsgate` for plain <script> tags (wsgate.iife.js), both with source maps,
// and the type declarations (types/, from tsc, which also type-checks).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });

execFileSync(join(here, 'node_modules', '.bin', 'tsc'), ['-p', join(here, 'tsconfig.json')], {
  stdio: 'inherit',
});

const common = {
  entryPoints: [join(here, 'src', 'index.ts')],
  bundle: true,
  sourcemap: true,
  target: 'es2020',
  logLevel: 'warning',
};
await build({ ...common, format: 'esm', outfile: join(dist, 'wsgate.mjs') });
await build({ ...common, format: 'iife', globalName: 'Wsgate', outfile: join(dist, 'wsgate.iife.js') });
console.log('built dist/wsgate.mjs, dist/wsgate.iife.js, dist/types/');
