// VNC input on its way from the VNC server (main thread) to the device
// thread: a ByteRing of fixed-size records, handed over as the fbuf slot's
// host port (DeviceContext.hostPorts.display(node)).
//   key      0, 1 = down / 0 = up, key (ps2-keymap.ts), 0, 0, 0
//   pointer  1, RFB button mask, x (16 bits LE), y (16 bits LE)

export interface DisplayInputTransfer { kind: 'fbuf-input'; input: SharedArrayBuffer }

export const INPUT_RECORD = 6;
export const INPUT_KEY = 0;
export const INPUT_POINTER = 1;
