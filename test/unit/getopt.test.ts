import { describe, expect, it } from 'vitest';

import { getopt } from '../../src/config/getopt.js';
import { UsageError } from '../../src/config/errors.js';

const OPTS = 'AHPm:s:';

describe('getopt', () => {
  it.each([
    [['-AHP', 'vm'], [{ opt: 'A' }, { opt: 'H' }, { opt: 'P' }], ['vm']],
    [['-m256M', 'vm'], [{ opt: 'm', arg: '256M' }], ['vm']],
    [['-m', '256M', 'vm'], [{ opt: 'm', arg: '256M' }], ['vm']],
    [['-Am', '1G', 'vm'], [{ opt: 'A' }, { opt: 'm', arg: '1G' }], ['vm']],
    [['-A', '--', '-H', 'vm'], [{ opt: 'A' }], ['-H', 'vm']],
    [['vm', '-A'], [], ['vm', '-A']],
    [['-A', '-', '-H'], [{ opt: 'A' }], ['-', '-H']],
    [['-m', '-H'], [{ opt: 'm', arg: '-H' }], []],
  ])('%j', (argv, options, operands) => {
    expect(getopt(argv, OPTS)).toEqual({ options, operands });
  });

  it('rejects unknown options and missing arguments with exit status 1', () => {
    expect(() => getopt(['-z'], OPTS)).toThrow(/illegal option -- z/);
    expect(() => getopt(['-A', '-m'], OPTS)).toThrow(/option requires an argument -- m/);
    try { getopt(['-z'], OPTS); } catch (e) { expect((e as UsageError).exitCode).toBe(1); }
  });
});
