// What the xHCI controller sees of a USB device (bhyve's usb_emul.h
// struct usb_devemu): its USB version and speed (which root hub port it
// goes on and what PORTSC says), control requests on endpoint 0, interrupt
// IN data, and a reset. A device tells its controller that it has new
// interrupt data through the `wake` callback the controller gives it.

/** The 8-byte SETUP packet of a control transfer. */
export interface SetupPacket {
  bmRequestType: number;
  bRequest: number;
  wValue: number;
  wIndex: number;
  wLength: number;
}

export type ControlResult =
  /** Completed: `data` is what an IN request returns (the controller
   * sends at most wLength bytes of it). */
  | { status: 'ok'; data?: Uint8Array }
  /** The device does not take this request: a STALL handshake. */
  | { status: 'stall' };

export interface UsbDevice {
  /** bhyve's ue_emu: the name in xhci's slot.N.device. */
  readonly name: string;
  /** 2 or 3 (bhyve's ue_usbver): a USB 2 or USB 3 root hub port. */
  readonly usbVersion: 2 | 3;
  /** PORTSC speed ID: 1 full, 2 low, 3 high, 4 super speed. */
  readonly speed: number;
  /** A control request on endpoint 0; `out` holds an OUT data stage. */
  control(setup: SetupPacket, out?: Uint8Array): ControlResult;
  /** Interrupt IN data for endpoint `ep` (1-15) into a buffer of `max`
   * bytes: the bytes to send (the controller copies at most `max`), 'nak' when the device has nothing new, or
   * 'stall' when the endpoint does not exist. */
  interruptIn(ep: number, max: number): Uint8Array | 'nak' | 'stall';
  /** Port or device reset (bhyve's ue_reset). */
  reset(): void;
  /** Set by the controller: the device has data for endpoint `ep` IN. */
  wake?: (ep: number) => void;
}

// Standard requests (USB 2.0 table 9-4) and request types.
export const UR = {
  GET_STATUS: 0x00, CLEAR_FEATURE: 0x01, SET_FEATURE: 0x03, SET_ADDRESS: 0x05, GET_DESCRIPTOR: 0x06,
  SET_DESCRIPTOR: 0x07, GET_CONFIG: 0x08, SET_CONFIG: 0x09, GET_INTERFACE: 0x0a, SET_INTERFACE: 0x0b,
  SYNCH_FRAME: 0x0c, SET_SEL: 0x30, SET_ISOCH_DELAY: 0x31,
} as const;
export const UT = {
  READ_DEVICE: 0x80, READ_INTERFACE: 0x81, READ_ENDPOINT: 0x82,
  WRITE_DEVICE: 0x00, WRITE_INTERFACE: 0x01, WRITE_ENDPOINT: 0x02,
  READ_CLASS_INTERFACE: 0xa1, WRITE_CLASS_INTERFACE: 0x21,
} as const;
export const UDESC = {
  DEVICE: 0x01, CONFIG: 0x02, STRING: 0x03, INTERFACE: 0x04, ENDPOINT: 0x05, BOS: 0x0f,
  DEVICE_CAPABILITY: 0x10, HID: 0x21, REPORT: 0x22, ENDPOINT_SS_COMP: 0x30,
} as const;
