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

# The virtio test ROMs: test/guests/virtio/guest-NAME.c -> virtio-NAME.rom,
# C (run in ring 3 of long mode) + start.S + vlib.c, linked by virtio.ld.
VSRC="$SRC/virtio"
VOUT="$OUT/virtio"
if [ -d "$VSRC" ]; then
	mkdir -p "$VOUT"
	CFLAGS="-m64 -ffreestanding -fno-pic -fno-pie -mgeneral-regs-only -mno-red-zone -mcmodel=small \
		-nostdlib -Os -fno-stack-protector -fno-asynchronous-unwind-tables -fcf-protection=none \
		-fno-builtin -Wall -Wextra -Werror"
	gcc -m64 -c -nostdinc -I "$SRC" -Wa,--fatal-warnings -o "$VOUT/start.o" "$VSRC/start.S"
	gcc -m64 -c -nostdinc -I "$VSRC" -Wa,--fatal-warnings -o "$VOUT/irq-entry.o" "$VSRC/irq.S"
	# shellcheck disable=SC2086
	gcc $CFLAGS -c -o "$VOUT/vlib.o" "$VSRC/vlib.c"
	# shellcheck disable=SC2086
	gcc $CFLAGS -c -o "$VOUT/irq.o" "$VSRC/irq.c"
	RUNTIME="$VOUT/vlib.o $VOUT/irq.o $VOUT/irq-entry.o"
	# shellcheck disable=SC2086
	gcc $CFLAGS -c -o "$VOUT/viommu.o" "$VSRC/viommu.c"
	for src in "$VSRC"/guest-*.c; do
		[ -e "$src" ] || continue
		name=virtio-$(basename "$src" .c | sed 's/^guest-//')
		# The virtio-iommu driver only where it is used.
		case $name in virtio-iommu*) extra="$VOUT/viommu.o" ;; *) extra= ;; esac
		# shellcheck disable=SC2086
		gcc $CFLAGS -c -o "$VOUT/$name.o" "$src"
		ld -m elf_x86_64 -T "$VSRC/virtio.ld" -nostdlib --build-id=none -z noexecstack --no-warn-rwx-segments \
			-o "$OUT/$name.elf" "$VOUT/start.o" "$VOUT/$name.o" $RUNTIME $extra
		objcopy -O binary -j .boot -j .payload -j .tail "$OUT/$name.elf" "$OUT/$name.rom.tmp"
		size=$(wc -c <"$OUT/$name.rom.tmp")
		if [ "$size" -ne 65536 ]; then
			echo "build-guests: $name.rom is $size bytes, expected 65536" >&2
			rm -f "$OUT/$name.rom.tmp"
			exit 1
		fi
		mv "$OUT/$name.rom.tmp" "$OUT/$name.rom"
		n=$((n + 1))
	done
	# Guests of their own directory on the same runtime:
	# test/guests/NAME/NAME.c -> NAME.rom (fwcfg, timers, ahci, nvme, fbuf, uart, e1000, xhci, numa, dmatest, hda)
	for dir in fwcfg timers ahci nvme fbuf uart e1000 xhci numa dmatest hda; do
		[ -f "$SRC/$dir/$dir.c" ] || continue
		# shellcheck disable=SC2086
		gcc $CFLAGS -I "$VSRC" -c -o "$VOUT/$dir.o" "$SRC/$dir/$dir.c"
		ld -m elf_x86_64 -T "$VSRC/virtio.ld" -nostdlib --build-id=none -z noexecstack --no-warn-rwx-segments \
			-o "$OUT/$dir.elf" "$VOUT/start.o" "$VOUT/$dir.o" $RUNTIME
		objcopy -O binary -j .boot -j .payload -j .tail "$OUT/$dir.elf" "$OUT/$dir.rom.tmp"
		[ "$(wc -c <"$OUT/$dir.rom.tmp")" -eq 65536 ] || { echo "build-guests: $dir.rom is not 65536 bytes" >&2; exit 1; }
		mv "$OUT/$dir.rom.tmp" "$OUT/$dir.rom"
		n=$((n + 1))
	done
fi
# tcp.rom: test/guests/tcp/ on the same runtime, carrying Debian's lwIP
# (liblwip.so.0, packages liblwip0 and liblwip-dev), which
# scripts/lwip-image.mjs loads at LWIP_BASE at build time: first the
# library's symbols for the guest's link, then its image, relocated and
# bound to the guest's libc.c, in front of the 64 KiB ROM.
LWIP_SO=/usr/lib/x86_64-linux-gnu/liblwip.so.0
LWIP_INC=/usr/include/lwip
LWIP_BASE=0x1000000
if [ -d "$VSRC" ] && [ -f "$SRC/tcp/tcp.c" ]; then
	if [ -f "$LWIP_SO" ] && [ -f "$LWIP_INC/lwipopts.h" ]; then
		command -v node >/dev/null 2>&1 || { echo "build-guests: 'node' not found (needed for tcp.rom)" >&2; exit 1; }
		node "$ROOT/scripts/lwip-image.mjs" symbols "$LWIP_SO" "$LWIP_BASE" "$VOUT/lwip-syms.ld" "$VOUT/lwip-image.h"
		for f in tcp libc; do
			# shellcheck disable=SC2086
			gcc $CFLAGS -I "$VSRC" -I "$VOUT" -isystem "$LWIP_INC" -c -o "$VOUT/tcp-$f.o" "$SRC/tcp/$f.c"
		done
		# shellcheck disable=SC2086
		ld -m elf_x86_64 -T "$VSRC/virtio.ld" -nostdlib --build-id=none -z noexecstack --no-warn-rwx-segments \
			-o "$OUT/tcp.elf" "$VOUT/start.o" "$VOUT/tcp-tcp.o" "$VOUT/tcp-libc.o" $RUNTIME "$VOUT/lwip-syms.ld"
		objcopy -O binary -j .boot -j .payload -j .tail "$OUT/tcp.elf" "$VOUT/tcp.rom64k"
		[ "$(wc -c <"$VOUT/tcp.rom64k")" -eq 65536 ] || { echo "build-guests: tcp.rom's 64 KiB part is not 65536 bytes" >&2; exit 1; }
		node "$ROOT/scripts/lwip-image.mjs" rom "$LWIP_SO" "$LWIP_BASE" "$OUT/tcp.elf" "$VOUT/tcp.rom64k" "$OUT/tcp.rom.tmp"
		mv "$OUT/tcp.rom.tmp" "$OUT/tcp.rom"
		n=$((n + 1))
	else
		echo "build-guests: tcp.rom not built: liblwip0 and liblwip-dev are not installed (apt-get install liblwip0 liblwip-dev)" >&2
	fi
fi
echo "build-guests: built $n ROMs in build/guests/"
