// bhyve-xml(1): libvirt domain XML -> the bhyveload and bhyve command lines
// libvirt's bhyve driver would run (to-argv), and a bhyve command line ->
// domain XML (from-argv). bin/bhyve-xml calls it.

import fs from 'node:fs';
import { UsageError } from '../config/errors.js';
import { buildCommands, shellQuote } from '../libvirt/bhyve-command.js';
import { DEFAULT_HOST_PATHS, DomainError, type HostPaths, parseDomainXml } from '../libvirt/domain-def.js';
import { domainXmlFromArgv } from '../libvirt/domain-from-argv.js';
import { systemErrorText, UserError } from '../user-error.js';
import { reportError, writeOut } from './output.js';

const PROG = 'bhyve-xml';
const USAGE = `usage: ${PROG} to-argv [--firmware-dir dir] [--nvram-dir dir] [--vnc-listen addr] domain.xml
       ${PROG} from-argv -- bhyve [bhyve options] vmname
`;

/** The options of to-argv: the host settings libvirt reads from its configuration. */
export const TO_ARGV_OPTIONS: Readonly<Record<string, keyof HostPaths>> = {
  '--firmware-dir': 'firmwareDir', '--nvram-dir': 'nvramDir', '--vnc-listen': 'vncListen',
};

/** Converts one domain; the lines to print, or the errors (one per line). */
export function toArgv(xml: string, what: string, paths: HostPaths = DEFAULT_HOST_PATHS): { lines: string[]; errors: string[] } {
  try {
    const { def, unsupported } = parseDomainXml(xml, what, paths);
    if (unsupported.length > 0) return { lines: [], errors: unsupported.map((p) => `${what}: unsupported element <${p.slice(1)}>`) };
    const cmds = buildCommands(def);
    const lines = [cmds.load, cmds.bhyve].filter((c): c is string[] => c !== undefined).map((c) => c.map(shellQuote).join(' '));
    return { lines, errors: [] };
  } catch (e) {
    if (e instanceof DomainError) return { lines: [], errors: [`${what}: ${e.message}`] };
    throw e;
  }
}

function readInput(file: string): string {
  try {
    return fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new UserError(`${file}: ${systemErrorText(e)}`);
  }
}

async function toArgvMain(args: string[]): Promise<number> {
  const paths = { ...DEFAULT_HOST_PATHS };
  const files: string[] = [];
  const opts = TO_ARGV_OPTIONS;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const eq = a.indexOf('=');
    const key = eq > 0 ? a.slice(0, eq) : a;
    if (opts[key] !== undefined) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) throw new UsageError(`option '${key}' requires an argument`, 1);
      paths[opts[key]] = v;
    } else if (a.startsWith('-') && a !== '-') {
      throw new UsageError(`unrecognized option '${a}'`, 1);
    } else {
      files.push(a);
    }
  }
  if (files.length !== 1) throw new UsageError('to-argv takes one domain XML file', 1);
  const r = toArgv(readInput(files[0]), files[0], paths);
  if (r.errors.length > 0) {
    process.stderr.write(r.errors.map((l) => `${PROG}: ${l}\n`).join(''));
    return 1;
  }
  await writeOut(process.stdout, r.lines.map((l) => `${l}\n`).join(''));
  return 0;
}

async function fromArgvMain(args: string[]): Promise<number> {
  const words = args[0] === '--' ? args.slice(1) : args;
  if (words.length === 0) throw new UsageError('from-argv needs a bhyve command line after --', 1);
  await writeOut(process.stdout, domainXmlFromArgv(words));
  return 0;
}

export async function bhyveXmlMain(argv: readonly string[]): Promise<number> {
  try {
    const [cmd, ...rest] = argv;
    if (cmd === '-h' || cmd === '--help') {
      await writeOut(process.stdout, USAGE);
      return 0;
    }
    if (cmd === 'to-argv') return await toArgvMain(rest);
    if (cmd === 'from-argv') return await fromArgvMain(rest);
    throw new UsageError(cmd === undefined ? 'missing command' : `unknown command '${cmd}'`, 1);
  } catch (e) {
    if (e instanceof UsageError && e.showUsage) {
      process.stderr.write(`${PROG}: ${e.message}\n${USAGE}`);
      return 1;
    }
    if (e instanceof DomainError) {
      process.stderr.write(`${PROG}: ${e.message}\n`);
      return 1;
    }
    return reportError(PROG, e, 1);
  }
}
