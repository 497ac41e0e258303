#!/usr/bin/env node
/**
 * `flowcraft-node build`: turns a bundle project (a package.json and an entry
 * module whose default export is a `defineBundle(...)`) into a WebAssembly
 * component for flowcraft-host. It bundles the entry and its npm dependencies
 * into one ES module with esbuild (TypeScript is compiled on the way; Node's
 * built-in modules are refused with an explanation), then componentizes that
 * module against the SDK's copy of the WIT world with componentize-js, whose
 * versions this package pins. `wasi:http` (and with it `fetch`) is left out
 * unless package.json says `"flowcraft": { "http": true }`.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { componentize } from '@bytecodealliance/componentize-js';
import * as esbuild from 'esbuild';
import type { BundleMeta } from './dispatch.js';

const USAGE = `Usage: flowcraft-node build [--entry FILE] [--out FILE]

Builds the bundle project in the current directory into a WebAssembly component.

  --entry FILE  the module whose default export is the bundle
                (default: package.json "flowcraft.entry", else src/index.ts or src/index.js)
  --out FILE    where to write the component (default: dist/<name>.wasm)

The bundle's name and version are package.json's "name" (without a scope) and "version".
package.json "flowcraft": { "http": true } keeps fetch() (wasi:http) in the component; the
host still only lets it reach the hosts granted to the bundle ([grants.<name>] http).`;

/** A mistake in the project or the command line, reported as one line without a stack. */
class UsageError extends Error {}

interface Project {
  root: string;
  meta: BundleMeta;
  entry: string;
  http: boolean;
}

const sdkRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { entry: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return;
  }
  if (positionals[0] !== 'build' || positionals.length > 1) {
    throw new UsageError(`unknown command "${positionals.join(' ')}"; the command is "build" (see --help)`);
  }
  const project = readProject(process.cwd(), values.entry);
  const out = resolve(values.out ?? join('dist', `${project.meta.name}.wasm`));
  const started = performance.now();
  await build(project, out);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const size = (readFileSync(out).length / 1e6).toFixed(1);
  console.log(`${project.meta.name}@${project.meta.version}: ${relative(process.cwd(), out)} (${size} MB, ${seconds} s)`);
}

function readProject(root: string, entryOption: string | undefined): Project {
  const manifestPath = join(root, 'package.json');
  if (!existsSync(manifestPath)) {
    throw new UsageError(`no package.json in ${root}: run flowcraft-node build in the bundle project's directory`);
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
    name?: string;
    version?: string;
    flowcraft?: { entry?: string; http?: boolean };
  };
  if (!manifest.name || !manifest.version) {
    throw new UsageError('package.json needs a "name" and a "version": they are the bundle\'s name and version');
  }
  const entry = entryOption ?? manifest.flowcraft?.entry ?? ['src/index.ts', 'src/index.js'].find((candidate) => existsSync(join(root, candidate)));
  if (entry === undefined || !existsSync(join(root, entry))) {
    throw new UsageError(`entry module ${entry ?? 'src/index.ts'} not found: give --entry or package.json "flowcraft.entry"`);
  }
  return {
    root,
    meta: { name: manifest.name.replace(/^@[^/]+\//, ''), version: manifest.version },
    entry: resolve(root, entry),
    http: manifest.flowcraft?.http === true,
  };
}

async function build(project: Project, out: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'flowcraft-node-'));
  try {
    const entry = join(work, 'entry.js');
    writeFileSync(entry, componentEntry(project));
    const bundled = join(work, 'bundle.js');
    await bundleModule(project, entry, bundled);
    const { component } = await componentize({
      sourcePath: bundled,
      witPath: join(sdkRoot, 'wit'),
      worldName: 'bundle',
      disableFeatures: project.http ? ['fetch-event'] : ['http', 'fetch-event'],
    });
    mkdirSync(dirname(out), { recursive: true });
    const partial = join(dirname(out), `.${basename(out)}.partial`);
    writeFileSync(partial, component);
    renameSync(partial, out);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The module componentize-js sees: the WIT import, the author's bundle, and the `node` export. */
function componentEntry(project: Project): string {
  const component = join(sdkRoot, 'dist', 'component.js');
  return [
    "import * as host from 'flowcraft:node/host@0.1.0';",
    `import bundle from ${JSON.stringify(project.entry)};`,
    `import { exportBundle } from ${JSON.stringify(component)};`,
    `export const node = exportBundle(bundle, host, ${JSON.stringify(project.meta)});`,
    '',
  ].join('\n');
}

async function bundleModule(project: Project, entry: string, outfile: string): Promise<void> {
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    mainFields: ['module', 'main'],
    absWorkingDir: project.root,
    external: ['flowcraft:*', 'wasi:*'],
    plugins: [refuseNodeBuiltins],
    logLevel: 'silent',
  }).catch((error: esbuild.BuildFailure) => error);
  if ('errors' in result && result.errors.length > 0) {
    const messages = await esbuild.formatMessages(result.errors, { kind: 'error', color: false });
    throw new UsageError(`bundling ${relative(project.root, project.entry)} failed:\n${messages.join('')}`);
  }
}

/** Nodes run in a sandbox without files, sockets or processes: say so instead of "could not resolve". */
const refuseNodeBuiltins: esbuild.Plugin = {
  name: 'refuse-node-builtins',
  setup(build) {
    const builtins = new Set(builtinModules);
    build.onResolve({ filter: /.*/ }, (args) => {
      const name = args.path.replace(/^node:/, '');
      if (!args.path.startsWith('node:') && !builtins.has(name.split('/')[0]!)) {
        return undefined;
      }
      return {
        errors: [
          {
            text: `Node's built-in module "${args.path}" is not available in a bundle: nodes run in a WebAssembly sandbox without files, sockets, processes or environment variables. Use the run context, config values, and fetch() to hosts the bundle is granted.`,
          },
        ],
      };
    });
  },
};

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`flowcraft-node: ${error instanceof UsageError ? error.message : String((error as Error)?.stack ?? error)}`);
  process.exitCode = 1;
});
