#!/bin/sh
# Build the SeaBIOS test disk: test/guests/bootsector/bootsector.S ->
# build/guests/bootsector.img (the 512-byte boot sector followed by zeros,
# 1 MiB in all). Needs gcc (as the assembler driver) and GNU binutils.
# Idempotent; fails loudly on any error.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/test/guests/bootsector"
OUT="$ROOT/build/guests"
mkdir -p "$OUT"
for tool in gcc ld objcopy; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "build-bootsector: '$tool' not found; install gcc and binutils (apt-get install gcc binutils)" >&2
		exit 1
	}
done
gcc -m32 -c -nostdinc -Wa,--fatal-warnings -o "$OUT/bootsector.o" "$SRC/bootsector.S"
ld -m elf_i386 -Ttext=0x7c00 -e _start -nostdlib --build-id=none -o "$OUT/bootsector.elf" "$OUT/bootsector.o"
objcopy -O binary -j .text "$OUT/bootsector.elf" "$OUT/bootsector.bin.tmp"
size=$(wc -c <"$OUT/bootsector.bin.tmp")
if [ "$size" -ne 512 ]; then
	echo "build-bootsector: boot sector is $size bytes, expected 512" >&2
	rm -f "$OUT/bootsector.bin.tmp"
	exit 1
fi
sig=$(od -An -tx1 -j510 -N2 "$OUT/bootsector.bin.tmp" | tr -d ' \n')
[ "$sig" = "55aa" ] || { echo "build-bootsector: missing 0x55aa signature (got $sig)" >&2; exit 1; }
mv "$OUT/bootsector.bin.tmp" "$OUT/bootsector.bin"
cp "$OUT/bootsector.bin" "$OUT/bootsector.img.tmp"
truncate -s 1M "$OUT/bootsector.img.tmp"
mv "$OUT/bootsector.img.tmp" "$OUT/bootsector.img"
rm -f "$OUT/bootsector.o" "$OUT/bootsector.elf"
echo "build-bootsector: built build/guests/bootsector.img"
