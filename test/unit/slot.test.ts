import { describe, expect, it } from 'vitest';

import { parseSlotOption, dumpConfig } from '../../src/config/bhyve-args.js';
import { ConfigTree } from '../../src/config/tree.js';

function slot(...opts: string[]): Array<[string, string]> {
  const t = new ConfigTree();
  for (const o of opts) parseSlotOption(t, o);
  return t.toJSON();
}

describe('-s slot,emulation[,conf]', () => {
  it.each([
    ['3,hostbridge', [['pci.0.3.0.device', 'hostbridge']]],
    ['3:1,hostbridge', [['pci.0.3.1.device', 'hostbridge']]],
    ['2:3:4,hostbridge', [['pci.2.3.4.device', 'hostbridge']]],
    ['255:31:7,hostbridge', [['pci.255.31.7.device', 'hostbridge']]],
    ['00:03:0,hostbridge', [['pci.0.3.0.device', 'hostbridge']]],
    ['0,amd_hostbridge', [['pci.0.0.0.device', 'hostbridge'], ['pci.0.0.0.vendor', '0x1022'], ['pci.0.0.0.devid', '0x7432']]],
    ['4,virtio-blk,/img/d.img,ro,nocache,direct,sync,nodelete,sectorsize=512/4096,ser=ABC,bootindex=1', [
      ['pci.0.4.0.device', 'virtio-blk'], ['pci.0.4.0.path', '/img/d.img'], ['pci.0.4.0.ro', 'true'],
      ['pci.0.4.0.nocache', 'true'], ['pci.0.4.0.direct', 'true'], ['pci.0.4.0.sync', 'true'],
      ['pci.0.4.0.nodelete', 'true'], ['pci.0.4.0.sectorsize', '512/4096'], ['pci.0.4.0.ser', 'ABC'],
      ['pci.0.4.0.bootindex', '1']]],
    ['5,virtio-net,tap0,mac=52:54:00:12:34:56,mtu=9000', [
      ['pci.0.5.0.device', 'virtio-net'], ['pci.0.5.0.backend', 'tap0'],
      ['pci.0.5.0.mac', '52:54:00:12:34:56'], ['pci.0.5.0.mtu', '9000']]],
    ['5,e1000,backend=tap1', [['pci.0.5.0.device', 'e1000'], ['pci.0.5.0.backend', 'tap1']]],
    ['6,ahci,hd:/a.img,cd:/b.iso,hd:/c.img,ro', [
      ['pci.0.6.0.device', 'ahci'],
      ['pci.0.6.0.port.0.type', 'hd'], ['pci.0.6.0.port.0.path', '/a.img'],
      ['pci.0.6.0.port.1.type', 'cd'], ['pci.0.6.0.port.1.path', '/b.iso'],
      ['pci.0.6.0.port.2.type', 'hd'], ['pci.0.6.0.port.2.path', '/c.img'], ['pci.0.6.0.port.2.ro', 'true']]],
    ['7,ahci-hd,/d.img,nmrr=1', [['pci.0.7.0.device', 'ahci'], ['pci.0.7.0.port.0.type', 'hd'],
      ['pci.0.7.0.port.0.path', '/d.img'], ['pci.0.7.0.port.0.nmrr', '1']]],
    ['7,ahci-cd,/c.iso', [['pci.0.7.0.device', 'ahci'], ['pci.0.7.0.port.0.type', 'cd'], ['pci.0.7.0.port.0.path', '/c.iso']]],
    ['8,nvme,ram=1024,ser=X', [['pci.0.8.0.device', 'nvme'], ['pci.0.8.0.ram', '1024'], ['pci.0.8.0.ser', 'X']]],
    ['8,nvme,/dev/zvol/x,maxq=4', [['pci.0.8.0.device', 'nvme'], ['pci.0.8.0.path', '/dev/zvol/x'], ['pci.0.8.0.maxq', '4']]],
    ['9,virtio-console,port1=/tmp/s1,port2=/tmp/s2', [['pci.0.9.0.device', 'virtio-console'],
      ['pci.0.9.0.port.0.name', 'port1'], ['pci.0.9.0.port.0.path', '/tmp/s1'],
      ['pci.0.9.0.port.1.name', 'port2'], ['pci.0.9.0.port.1.path', '/tmp/s2']]],
    ['10,virtio-rnd', [['pci.0.10.0.device', 'virtio-rnd']]],
    ['11,fbuf,tcp=0.0.0.0:5900,w=800,h=600,wait', [['pci.0.11.0.device', 'fbuf'], ['pci.0.11.0.tcp', '0.0.0.0:5900'],
      ['pci.0.11.0.w', '800'], ['pci.0.11.0.h', '600'], ['pci.0.11.0.wait', 'true']]],
    ['12,passthru,2/0/0,rom=/x.rom', [['pci.0.12.0.device', 'passthru'], ['pci.0.12.0.bus', '2'],
      ['pci.0.12.0.slot', '0'], ['pci.0.12.0.func', '0'], ['pci.0.12.0.rom', '/x.rom']]],
    ['13,xhci,tablet', [['pci.0.13.0.device', 'xhci'], ['pci.0.13.0.slot.1.device', 'tablet']]],
    ['14,virtio-9p,share=/srv,ro', [['pci.0.14.0.device', 'virtio-9p'], ['pci.0.14.0.sharename', 'share'],
      ['pci.0.14.0.path', '/srv'], ['pci.0.14.0.ro', 'true']]],
    ['15,uart,stdio', [['pci.0.15.0.device', 'uart'], ['pci.0.15.0.path', 'stdio']]],
    ['16,hda,play=/dev/dsp0,rec=/dev/dsp0', [['pci.0.16.0.device', 'hda'], ['pci.0.16.0.play', '/dev/dsp0'],
      ['pci.0.16.0.rec', '/dev/dsp0']]],
    ['17,virtio-input,/dev/input/event0', [['pci.0.17.0.device', 'virtio-input'], ['pci.0.17.0.path', '/dev/input/event0']]],
  ])('%s', (opt, expected) => {
    expect(slot(opt)).toEqual(expected);
  });

  it.each([
    ['3', /Invalid PCI slot info field "3"/],
    ['32,hostbridge', /Invalid PCI slot info field/],
    ['0:8,hostbridge', /Invalid PCI slot info field/],
    ['256:0:0,hostbridge', /Invalid PCI slot info field/],
    ['x,hostbridge', /Invalid PCI slot info field/],
    ['3,nosuch', /pci slot 0:3:0: unknown device "nosuch"/],
    ['6,ahci,/a.img', /Missing or invalid type for port 0/],
    ['9,virtio-console,foo', /vtcon: port foo requires a path/],
  ])('rejects %s', (opt, re) => {
    expect(() => slot(opt)).toThrow(re);
  });

  it('refuses a re-used slot', () => {
    expect(() => slot('3,hostbridge', '3:0,virtio-rnd')).toThrow('pci slot 0:3:0 already occupied!');
    expect(slot('3,hostbridge', '3:1,virtio-rnd')).toHaveLength(2);
  });

  it('dumps as path=value lines', () => {
    const t = new ConfigTree();
    parseSlotOption(t, '3,virtio-blk,/x,ro');
    expect(dumpConfig(t)).toBe('pci.0.3.0.device=virtio-blk\npci.0.3.0.path=/x\npci.0.3.0.ro=true\n');
  });
});
