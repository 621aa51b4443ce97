// Where bhyve is installed: the directory holding its package.json. Code
// runs from src/ (tests), dist/DIR/ (tsc's output, BHYVE_BUNDLE=0) or
// dist/bundle/ (scripts/bundle.mjs puts every module in one flat
// directory), so a path relative to a module's own file is wrong in one of
// them; paths to files shipped with the tools start from here. A
// package.json without a name (dist/bundle's, which only sets the module
// type) is not the package's.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The nearest directory above this module that holds the package's
 * package.json. */
export function installRoot(): string {
  if (root !== undefined) return root;
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let d = start; ; d = path.dirname(d)) {
    if (namesPackage(path.join(d, 'package.json'))) return (root = d);
    if (path.dirname(d) === d) return (root = path.resolve(start, '..'));
  }
}

function namesPackage(file: string): boolean {
  try {
    return typeof (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: unknown }).name === 'string';
  } catch {
    return false;
  }
}
