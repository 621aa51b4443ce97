#!/bin/sh
# Build the test kernels that bhyveload loads, from test/guests/kernels/:
#   mb-*.S  -> build/kernels/mb-*.bin      Multiboot v1 (a.out kludge), flat
#              images loaded at 1 MiB, linked by mb.ld
#   mbelf-*.S -> build/kernels/mbelf-*.elf Multiboot v1 in ELF form, linked
#              with -Ttext=0x100000 and no -N (headers at 0xff000), and
#              mbelf-*-n.elf linked with -N
#   pvh-*.S -> build/kernels/pvh-*.elf     PVH: ELF32 at 1 MiB with the Xen
#              PHYS32_ENTRY note, linked by pvh.ld
#   bz-*.S  -> build/kernels/bz-*.bzImage  Linux boot protocol images (setup
#              header + 64-bit kernel at 1 MiB), linked by bz.ld
# Needs gcc and GNU binutils (as, ld, objcopy). Idempotent.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/test/guests/kernels"
OUT="$ROOT/build/kernels"
mkdir -p "$OUT"
for tool in gcc as ld objcopy; do
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
# mbelf-*.S -> build/kernels/mbelf-*.elf: Multiboot kernels in ELF form,
# linked the common way (-Ttext, no -N and no script), so the ELF and
# program headers form a first PT_LOAD at 0xff000; and mbelf-*-n.elf, the
# same linked with -N (one segment from 1 MiB). QEMU copies a kernel's
# whole span, the gap up to 1 MiB included, over the BIOS's F segment
# (0xff000-0xfffff), so BIOS services need the -N form there.
for src in "$SRC"/mbelf-*.S; do
	name=$(basename "$src" .S)
	gcc -m32 -c -nostdinc -Wa,--fatal-warnings -o "$OUT/$name.o" "$src"
	ld -m elf_i386 -Ttext=0x100000 -e entry -nostdlib --build-id=none $RWX -o "$OUT/$name.elf.tmp" "$OUT/$name.o"
	mv "$OUT/$name.elf.tmp" "$OUT/$name.elf"
	ld -m elf_i386 -N -Ttext=0x100000 -e entry -nostdlib --build-id=none $RWX -o "$OUT/$name-n.elf.tmp" "$OUT/$name.o"
	mv "$OUT/$name-n.elf.tmp" "$OUT/$name-n.elf"
	rm -f "$OUT/$name.o"
done
for src in "$SRC"/pvh-*.S; do
	name=$(basename "$src" .S)
	as --32 --fatal-warnings -o "$OUT/$name.o" "$src"
	ld -m elf_i386 -T "$SRC/pvh.ld" -nostdlib $RWX -o "$OUT/$name.elf.tmp" "$OUT/$name.o"
	mv "$OUT/$name.elf.tmp" "$OUT/$name.elf"
	rm -f "$OUT/$name.o"
done
for src in "$SRC"/bz-*.S; do
	name=$(basename "$src" .S)
	as --64 --fatal-warnings -o "$OUT/$name.o" "$src"
	ld -m elf_x86_64 -T "$SRC/bz.ld" -nostdlib $RWX -o "$OUT/$name.elf" "$OUT/$name.o"
	objcopy -O binary "$OUT/$name.elf" "$OUT/$name.bzImage.tmp"
	mv "$OUT/$name.bzImage.tmp" "$OUT/$name.bzImage"
	rm -f "$OUT/$name.o"
done
