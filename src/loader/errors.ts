// One error type for everything a loader refuses: a corrupt or unsupported
// image, a file that is missing or outside the allowed root, a kernel that does
// not fit in guest memory. The message is one line meant for the user as is.

import { UserError } from '../user-error.js';

export class LoaderError extends UserError { override readonly name: string = 'LoaderError'; }

export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
