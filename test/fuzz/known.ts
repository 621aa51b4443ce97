// Findings that reproduce a defect already filed and owned by someone else,
// so that the bounded CI run reports them without failing on them. Each
// entry names where it is tracked; delete it when the fix is merged (the CI
// run then fails if the defect comes back).

import type { Finding } from './harness.js';

export interface KnownDefect {
  target: string;
  /** Matches the finding's message. */
  match: RegExp;
  tracked: string;
}

export const KNOWN_DEFECTS: readonly KnownDefect[] = [
];

export function knownDefect(f: Finding): KnownDefect | undefined {
  return KNOWN_DEFECTS.find((k) => k.target === f.target && k.match.test(f.message));
}
