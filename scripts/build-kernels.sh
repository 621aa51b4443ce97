#!/bin/sh
# Build the test kernels that bhyveload loads: test/guests/kernels/*.S ->
# build/kernels/*.bin (Multiboot v1, a.out kludge, flat images loaded at
# 1 MiB, linked by mb.ld). Needs gcc and GNU binutils. Idempotent.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/test/guests/kernels"
OUT="$ROOT/build/kernels"
mkdir -p "$OUT"
for tool in gcc ld objcopy; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "build-kernels: '$tool' not found; install gcc and binutils (apt-get install gcc binutils)" >&2
		exit 1
	}
done
RWX=
if ld --help 2>/dev/null | grep -q no-warn-rwx-segments; then RWX=--no-warn-rwx-segments; fi
for src in "$SRC"/mb-*.S; do
	name=$(basename "$src" .S)
	gcc -m32 -c -nostdinc -Wa,--fatal-warnings -o "$OUT/$name.o" "$src"
	ld -m elf_i386 -T "$SRC/mb.ld" -nostdlib $RWX -o "$OUT/$name.elf" "$OUT/$name.o"
	objcopy -O binary -j .text "$OUT/$name.elf" "$OUT/$name.bin.tmp"
	mv "$OUT/$name.bin.tmp" "$OUT/$name.bin"
	rm -f "$OUT/$name.o"
done
