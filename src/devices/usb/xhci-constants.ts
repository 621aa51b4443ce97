// xHCI 1.x register bits, TRB types, completion codes and context layouts
// used by xhci.ts (names after FreeBSD's xhcireg.h, which bhyve uses).

// USBCMD
export const CMD_RS = 1 << 0;
export const CMD_HCRST = 1 << 1;
export const CMD_INTE = 1 << 2;
export const CMD_HSEE = 1 << 3;
export const CMD_CSS = 1 << 8;
export const CMD_CRS = 1 << 9;
// USBSTS
export const STS_HCH = 1 << 0;
export const STS_HSE = 1 << 2;
export const STS_EINT = 1 << 3;
export const STS_PCD = 1 << 4;
export const STS_SSS = 1 << 8;
export const STS_RSS = 1 << 9;
export const STS_SRE = 1 << 10;
export const STS_CNR = 1 << 11;
export const STS_HCE = 1 << 12;
// CRCR
export const CRCR_RCS = 1 << 0;
export const CRCR_CS = 1 << 1;
export const CRCR_CA = 1 << 2;
export const CRCR_CRR = 1 << 3;
// IMAN, ERDP
export const IMAN_IP = 1 << 0;
export const IMAN_IE = 1 << 1;
export const ERDP_EHB = 1 << 3;
// PORTSC
export const PS_CCS = 1 << 0;
export const PS_PED = 1 << 1;
export const PS_OCA = 1 << 3;
export const PS_PR = 1 << 4;
export const PS_PLS_SHIFT = 5;
export const PS_PLS_MASK = 0xf << 5;
export const PS_PP = 1 << 9;
export const PS_SPEED_SHIFT = 10;
export const PS_SPEED_MASK = 0xf << 10;
export const PS_PIC_MASK = 0x3 << 14;
export const PS_LWS = 1 << 16;
export const PS_CSC = 1 << 17;
export const PS_PEC = 1 << 18;
export const PS_WRC = 1 << 19;
export const PS_OCC = 1 << 20;
export const PS_PRC = 1 << 21;
export const PS_PLC = 1 << 22;
export const PS_CEC = 1 << 23;
export const PS_CAS = 1 << 24;
export const PS_DR = 1 << 30;
export const PS_WPR = 1 << 31;
/** Change bits: write 1 to clear. */
export const PS_CHANGE_BITS = PS_CSC | PS_PEC | PS_WRC | PS_OCC | PS_PRC | PS_PLC | PS_CEC;
// Port link states.
export const PLS_U0 = 0;
export const PLS_U3 = 3;
export const PLS_RX_DETECT = 5;
export const PLS_POLLING = 7;
export const PLS_RESUME = 15;

// TRB dword 3
export const TRB_CYCLE = 1 << 0;
export const TRB_TC = 1 << 1; // link TRB: toggle cycle
export const TRB_ENT = 1 << 1;
export const TRB_ISP = 1 << 2;
export const TRB_ED = 1 << 2; // transfer event: event data
export const TRB_CHAIN = 1 << 4;
export const TRB_IOC = 1 << 5;
export const TRB_IDT = 1 << 6;
export const TRB_BSR = 1 << 9; // address device: block SET_ADDRESS
export const TRB_DC = 1 << 9; // configure endpoint: deconfigure
export const TRB_DIR_IN = 1 << 16; // data stage
export const trbType = (dw3: number): number => (dw3 >>> 10) & 0x3f;
export const trbSlot = (dw3: number): number => dw3 >>> 24;
export const trbEp = (dw3: number): number => (dw3 >>> 16) & 0x1f;

export const TRB = {
  NORMAL: 1, SETUP_STAGE: 2, DATA_STAGE: 3, STATUS_STAGE: 4, ISOCH: 5, LINK: 6, EVENT_DATA: 7, NOOP: 8,
  ENABLE_SLOT: 9, DISABLE_SLOT: 10, ADDRESS_DEVICE: 11, CONFIGURE_EP: 12, EVALUATE_CTX: 13, RESET_EP: 14,
  STOP_EP: 15, SET_TR_DEQUEUE: 16, RESET_DEVICE: 17, FORCE_EVENT: 18, NEGOTIATE_BW: 19, SET_LATENCY_TOL: 20,
  GET_PORT_BW: 21, FORCE_HEADER: 22, NOOP_CMD: 23,
  // events
  EVENT_TRANSFER: 32, EVENT_CMD_COMPLETE: 33, EVENT_PORT_STS_CHANGE: 34, EVENT_HOST_CTRL: 37,
} as const;

/** Completion codes (xHCI table 6-90). */
export const CC = {
  SUCCESS: 1, DATA_BUFFER: 2, BABBLE: 3, TRANSACTION: 4, TRB: 5, STALL: 6, RESOURCE: 7, BANDWIDTH: 8,
  NO_SLOTS: 9, INVALID_STREAM_TYPE: 10, SLOT_NOT_ENABLED: 11, EP_NOT_ENABLED: 12, SHORT_PACKET: 13,
  PARAMETER: 17, CONTEXT_STATE: 19, EVENT_RING_FULL: 21, CMD_RING_STOPPED: 24, CMD_ABORTED: 25, STOPPED: 26,
} as const;

// Slot context states (dword 3 bits 27-31) and endpoint states (dword 0 bits 0-2).
export const SLOT_ENABLED = 0;
export const SLOT_DEFAULT = 1;
export const SLOT_ADDRESSED = 2;
export const SLOT_CONFIGURED = 3;
export const EP_DISABLED = 0;
export const EP_RUNNING = 1;
export const EP_HALTED = 2;
export const EP_STOPPED = 3;
export const EP_ERROR = 4;

/** Context size (HCCPARAMS1.CSZ = 0). */
export const CTX_SIZE = 32;
/** Input context: the input control context, the slot and 31 endpoints. */
export const INPUT_CTX_SIZE = 33 * CTX_SIZE;
export const DEVICE_CTX_SIZE = 32 * CTX_SIZE;
export const TRB_SIZE = 16;
