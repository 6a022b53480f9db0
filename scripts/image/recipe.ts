// What goes into the tandem image, read from the Dockerfile: the one recipe for
// both the registry build (a user's CI: `docker build .`) and the local build
// without Docker or a registry (`npm run image`, scripts/image/build.ts).
//
// The Dockerfile is parsed, not guessed at. The local build understands exactly
// these instructions of the final stage, and refuses anything else, so a change to
// the Dockerfile either carries over or fails loudly (recipe.test.ts runs this on
// the repository's Dockerfile):
//
//   FROM debian:SUITE-slim               → mmdebstrap SUITE (minbase)
//   COPY image/packages.txt /tmp/…       → the package list, read from the same file
//   RUN apt-get … /tmp/packages.txt …    → mmdebstrap --include=<the packages>
//   RUN <anything else>                  → run verbatim in the new root (chroot), before
//                                          the COPY steps: it must not need their files
//   COPY --from=STAGE /usr/local/bin/node …  → the Node binary of package-lock's `node`,
//                                          which must be the ARG NODE_VERSION of STAGE
//   COPY --from=STAGE /app/node_modules … → `npm ci` of STAGE's RUN line, locally
//   COPY --from=STAGE /protos …          → STAGE's one `RUN bash /tmp/X.sh /protos`, run
//                                          locally with the work tree's scripts/X.sh
//   COPY SRC… DEST                       → the files of the work tree
//   WORKDIR, ENV K=V…, USER, ENTRYPOINT, CMD → the image config
// Pure: no file system access (the caller reads the files).

export type Instruction = { op: string; args: string; line: number };

export type Stage = { from: string; name?: string; instructions: Instruction[] };

export type Dockerfile = { args: Record<string, string>; stages: Stage[] };

export type Copy =
  | { kind: 'context'; sources: string[]; dest: string }
  | { kind: 'node-binary'; dest: string }
  | { kind: 'node-modules'; dest: string; npmCommand: string }
  | { kind: 'script-output'; dest: string; script: string };

export type Recipe = {
  /** Debian suite of the base (FROM debian:SUITE-slim). */
  suite: string;
  /** The work tree file with the Debian packages (COPY … /tmp/… then RUN apt-get … that file). */
  packagesFile: string;
  /** RUN lines other than the apt one, run in the new root in order. */
  runs: string[];
  /** Node.js version of the binary the image ships. */
  nodeVersion: string;
  /** COPY steps of the final stage, in order, with destinations made absolute. */
  copies: Copy[];
  config: { env: [string, string][]; workdir: string; user?: string; entrypoint: string[]; cmd: string[] };
};

export class RecipeError extends Error {
  readonly code = 'TANDEM_ERR_IMAGE_RECIPE';
  constructor(message: string, line?: number) {
    super(line === undefined ? message : `Dockerfile line ${line}: ${message}`);
    this.name = 'RecipeError';
  }
}

/** Logical lines (continuations joined, comments and blank lines dropped) as instructions. */
export function parseDockerfile(text: string): Dockerfile {
  const instructions: Instruction[] = [];
  let current: { text: string; line: number } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (current === undefined && /^\s*(#.*)?$/.test(line)) return;
    if (current !== undefined && /^\s*#/.test(line)) return; // comment inside a continuation
    const continued = /\\\s*$/.test(line);
    const body = continued ? line.replace(/\\\s*$/, '') : line;
    current =
      current === undefined
        ? { text: body.trim(), line: i + 1 }
        : { ...current, text: `${current.text} ${body.trim()}` };
    if (!continued) {
      const m = /^(\S+)\s*(.*)$/.exec(current.text)!;
      instructions.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: current.line });
      current = undefined;
    }
  });
  const out: Dockerfile = { args: {}, stages: [] };
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new RecipeError(`cannot read FROM ${ins.args}`, ins.line);
      out.stages.push({ from: expand(m[1]!, out.args, ins.line), ...(m[2] ? { name: m[2] } : {}), instructions: [] });
    } else if (out.stages.length === 0) {
      if (ins.op !== 'ARG') throw new RecipeError(`${ins.op} before the first FROM`, ins.line);
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(\S+)$/.exec(ins.args);
      if (!m) throw new RecipeError(`a global ARG needs a default value: ARG ${ins.args}`, ins.line);
      out.args[m[1]!] = m[2]!;
    } else {
      out.stages.at(-1)!.instructions.push(ins);
    }
  }
  return out;
}

function expand(s: string, args: Record<string, string>, line: number): string {
  return s.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, name: string) => {
    const v = args[name];
    if (v === undefined) throw new RecipeError(`$${name} is not a global ARG with a default`, line);
    return v;
  });
}

/** A JSON-array (exec form) argument, as ENTRYPOINT and CMD must be written here. */
function execForm(ins: Instruction): string[] {
  let v: unknown;
  try {
    v = JSON.parse(ins.args);
  } catch {
    throw new RecipeError(`${ins.op} must use the exec form (a JSON array)`, ins.line);
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))
    throw new RecipeError(`${ins.op} must be a JSON array of strings`, ins.line);
  return v;
}

/** KEY=VALUE pairs; values may be double-quoted; no variable references (the local build does not expand). */
function envPairs(ins: Instruction): [string, string][] {
  const out: [string, string][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  const rest = ins.args.replace(re, (_, k: string, v: string) => {
    const value = v.startsWith('"') ? (JSON.parse(v) as string) : v;
    if (value.includes('$'))
      throw new RecipeError(`ENV ${k}: write the value out, without $ references (${value})`, ins.line);
    out.push([k, value]);
    return '';
  });
  if (rest.trim() !== '') throw new RecipeError(`ENV must be KEY=VALUE pairs: ${ins.args}`, ins.line);
  return out;
}

function absolute(dest: string, workdir: string): string {
  const d = dest.startsWith('/') ? dest : `${workdir.replace(/\/$/, '')}/${dest.replace(/^\.\//, '')}`;
  return d.replace(/\/\.?$/, '') || '/';
}

/** The recipe of the final stage, checked against what the local build understands. */
export function recipeFrom(df: Dockerfile): Recipe {
  const final = df.stages.at(-1);
  if (!final) throw new RecipeError('no FROM');
  const base = /^debian:([a-z]+)-slim$/.exec(final.from);
  if (!base) throw new RecipeError(`the final stage must be FROM debian:SUITE-slim, not ${final.from}`);
  const stages = new Map(df.stages.filter((s) => s.name).map((s) => [s.name!, s]));
  const recipe: Recipe = {
    suite: base[1]!,
    packagesFile: '',
    runs: [],
    nodeVersion: '',
    copies: [],
    config: { env: [], workdir: '/', entrypoint: [], cmd: [] },
  };
  let tmpPackages: { file: string; tmp: string } | undefined;
  for (const ins of final.instructions) {
    switch (ins.op) {
      case 'WORKDIR':
        recipe.config.workdir = absolute(ins.args, recipe.config.workdir);
        break;
      case 'ENV':
        recipe.config.env.push(...envPairs(ins));
        break;
      case 'USER':
        recipe.config.user = ins.args;
        break;
      case 'ENTRYPOINT':
        recipe.config.entrypoint = execForm(ins);
        break;
      case 'CMD':
        recipe.config.cmd = execForm(ins);
        break;
      case 'RUN':
        if (/\bapt-get\s+install\b/.test(ins.args)) {
          if (!tmpPackages || !ins.args.includes(tmpPackages.tmp))
            throw new RecipeError(
              'RUN apt-get install must install the packages of a list COPY’d just before (image/packages.txt)',
              ins.line,
            );
          recipe.packagesFile = tmpPackages.file;
        } else {
          recipe.runs.push(ins.args);
        }
        break;
      case 'COPY':
        recipe.copies.push(...copyStep(ins, recipe, stages, (p) => (tmpPackages = p)));
        break;
      default:
        throw new RecipeError(`${ins.op} is not understood by the local build (scripts/image/recipe.ts)`, ins.line);
    }
  }
  if (!recipe.packagesFile) throw new RecipeError('the final stage installs no package list');
  if (!recipe.nodeVersion) throw new RecipeError('the final stage copies no Node binary');
  return recipe;
}

function copyStep(
  ins: Instruction,
  recipe: Recipe,
  stages: Map<string, Stage>,
  packages: (p: { file: string; tmp: string }) => void,
): Copy[] {
  const words = ins.args.split(/\s+/);
  const from = words[0]?.startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
  if (words.some((w) => w.startsWith('--')))
    throw new RecipeError(`COPY flags other than --from: ${ins.args}`, ins.line);
  if (words.length < 2) throw new RecipeError(`COPY needs a source and a destination: ${ins.args}`, ins.line);
  const dest = absolute(words.at(-1)!, recipe.config.workdir);
  const sources = words.slice(0, -1);
  if (from === undefined) {
    if (sources.length === 1 && dest.startsWith('/tmp/') && sources[0]!.endsWith('.txt')) {
      packages({ file: sources[0]!, tmp: dest });
      return [];
    }
    return [{ kind: 'context', sources, dest }];
  }
  const stage = stages.get(from);
  if (!stage) throw new RecipeError(`COPY --from=${from}: no stage of that name`, ins.line);
  if (sources.length !== 1) throw new RecipeError(`COPY --from=${from}: one source at a time`, ins.line);
  const src = sources[0]!;
  if (src === '/usr/local/bin/node') {
    const m = /^node:(\d+\.\d+\.\d+)-[a-z]+-slim$/.exec(stage.from);
    if (!m) throw new RecipeError(`the Node binary must come from node:X.Y.Z-SUITE-slim, not ${stage.from}`, ins.line);
    recipe.nodeVersion = m[1]!;
    return [{ kind: 'node-binary', dest }];
  }
  if (src.endsWith('/node_modules')) {
    const npm = stage.instructions.filter((i) => i.op === 'RUN' && /^npm ci\b/.test(i.args));
    if (npm.length !== 1) throw new RecipeError(`stage ${from} must have exactly one RUN npm ci`, ins.line);
    return [{ kind: 'node-modules', dest, npmCommand: npm[0]!.args }];
  }
  if (src === '/protos') {
    const runs = stage.instructions.filter((i) => i.op === 'RUN');
    const m = runs.length === 1 ? /^bash \/tmp\/([a-z0-9-]+\.sh) \/protos$/.exec(runs[0]!.args) : null;
    if (!m) throw new RecipeError(`stage ${from} must have exactly one RUN bash /tmp/SCRIPT.sh /protos`, ins.line);
    return [{ kind: 'script-output', dest, script: `scripts/${m[1]}` }];
  }
  throw new RecipeError(
    `COPY --from=${from} ${src}: the local build knows only the Node binary, node_modules and /protos`,
    ins.line,
  );
}

/** The package names of a packages file: one per line, # comments. */
export function parsePackages(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}
