// Where bhyve is installed: the directory holding its package.json. Code
// runs from src/ (tests), dist/DIR/ (tsc's output, BHYVE_BUNDLE=0) or
// dist/bundle/ (scripts/bundle.mjs puts every module in one flat
// directory), so a path relative to a module's own file is wrong in one of
// them; paths to files shipped with the tools start from here.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The nearest directory above this module that holds a package.json. */
export function installRoot(): string {
  if (root !== undefined) return root;
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let d = start; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return (root = d);
    if (path.dirname(d) === d) return (root = path.resolve(start, '..'));
  }
}
