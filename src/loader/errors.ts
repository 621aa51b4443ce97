// One error type for everything a loader refuses: a corrupt or unsupported
// image, a file that is missing or outside the allowed root, a kernel that does
// not fit in guest memory. The message is one line meant for the user as is.

export class LoaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LoaderError';
  }
}

export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
