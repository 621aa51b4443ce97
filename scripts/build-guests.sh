#!/bin/sh
# Build the test boot ROMs: test/guests/*.S -> build/guests/*.rom
# (flat 64 KiB images ending at 4 GiB). Needs only gcc (as the C
# preprocessor driver) and GNU binutils (as, ld, objcopy).
# Idempotent; fails loudly on any error.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/test/guests"
OUT="$ROOT/build/guests"
mkdir -p "$OUT"
for tool in gcc ld objcopy; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "build-guests: '$tool' not found; install gcc and binutils (apt-get install gcc binutils)" >&2
		exit 1
	}
done
n=0
for src in "$SRC"/*.S; do
	name=$(basename "$src" .S)
	obj="$OUT/$name.o"
	elf="$OUT/$name.elf"
	rom="$OUT/$name.rom"
	gcc -m32 -c -nostdinc -I "$SRC" -Wa,--fatal-warnings -o "$obj" "$src"
	ld -m elf_i386 -T "$SRC/rom.ld" -nostdlib -o "$elf" "$obj"
	objcopy -O binary -j .text "$elf" "$rom.tmp"
	size=$(wc -c <"$rom.tmp")
	if [ "$size" -ne 65536 ]; then
		echo "build-guests: $name.rom is $size bytes, expected 65536" >&2
		rm -f "$rom.tmp"
		exit 1
	fi
	mv "$rom.tmp" "$rom"
	rm -f "$obj"
	n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "build-guests: no sources in $SRC" >&2; exit 1; }
echo "build-guests: built $n ROMs in build/guests/"
