// Shared pieces of the oclif-based tools (bhyveload, bhyvectl).

import { Flags } from '@oclif/core';

import type { OptionInfo } from '../config/bhyve-options.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type FlagMap = Record<string, any>;

/** oclif flags for a table of long options (bhyvectl style: --name or --name=value). */
export function longFlags(table: readonly OptionInfo[]): FlagMap {
  const flags: FlagMap = {};
  for (const o of table) {
    flags[o.flag] = o.arg
      ? Flags.string({ description: o.description, helpValue: o.arg.toUpperCase() })
      : Flags.boolean({ description: o.description });
  }
  return flags;
}

/** First line of an oclif parse error, without its "See more help" tail. */
export function parseErrorLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0].trim();
}
