// POSIX getopt(3) over an argv array, as bhyve(8) uses it: options are single
// characters, grouped flags ("-AHP"), option arguments attached ("-m256M") or
// in the next word ("-m 256M"), "--" ends the options, and parsing stops at
// the first operand (a word not starting with '-', or a lone "-").

import { UsageError } from './errors.js';

export interface GetoptOption {
  /** The option character, e.g. 'm'. */
  opt: string;
  /** Its argument, for options declared with ':' in the optstring. */
  arg?: string;
}

export interface GetoptResult {
  /** Options in command-line order. */
  options: GetoptOption[];
  /** The words after the options (operands). */
  operands: string[];
}

/** Parses an optstring ("ab:c") into option char -> takes-argument. */
export function parseOptstring(optstring: string): Map<string, boolean> {
  const m = new Map<string, boolean>();
  for (let i = 0; i < optstring.length; i++) {
    const c = optstring[i];
    if (c === ':') continue;
    m.set(c, optstring[i + 1] === ':');
  }
  return m;
}

/**
 * Runs getopt over argv, yielding options one at a time in command-line
 * order, so a caller acts on each option before a later bad one is seen (as
 * bhyve's getopt loop does). `state.operands` holds the operands once the
 * iteration has finished. Errors are UsageErrors carrying getopt(3)'s wording
 * ("illegal option -- z", "option requires an argument -- m") and exit status
 * 1, as bhyve's usage(1).
 */
export function* getoptIter(
  argv: readonly string[], optstring: string, state: { operands: string[] } = { operands: [] },
): Generator<GetoptOption, void, void> {
  const spec = parseOptstring(optstring);
  let i = 0;
  while (i < argv.length) {
    const word = argv[i];
    if (word === '--') { i++; break; }
    if (word.length < 2 || word[0] !== '-') break;
    let j = 1;
    while (j < word.length) {
      const c = word[j];
      const takesArg = spec.get(c);
      if (takesArg === undefined) throw new UsageError(`illegal option -- ${c}`, 1);
      if (!takesArg) {
        yield { opt: c };
        j++;
        continue;
      }
      if (j + 1 < word.length) {
        yield { opt: c, arg: word.slice(j + 1) };
      } else if (i + 1 < argv.length) {
        i++;
        yield { opt: c, arg: argv[i] };
      } else {
        throw new UsageError(`option requires an argument -- ${c}`, 1);
      }
      break;
    }
    i++;
  }
  state.operands = argv.slice(i);
}

/** Runs getopt over all of argv at once. */
export function getopt(argv: readonly string[], optstring: string): GetoptResult {
  const state = { operands: [] as string[] };
  const options = [...getoptIter(argv, optstring, state)];
  return { options, operands: state.operands };
}
