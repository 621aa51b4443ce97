// Register layout of an AHCI 1.3 HBA (FreeBSD's sys/dev/ahci/ahci.h) and the
// ATA/ATAPI command and status codes bhyve's pci_ahci.c uses (sys/ata.h).

/** HBA (generic host control) registers. */
export const AHCI_CAP = 0x00;
export const AHCI_GHC = 0x04;
export const AHCI_IS = 0x08;
export const AHCI_PI = 0x0c;
export const AHCI_VS = 0x10;
export const AHCI_CCCC = 0x14;
export const AHCI_CCCP = 0x18;
export const AHCI_EM_LOC = 0x1c;
export const AHCI_EM_CTL = 0x20;
export const AHCI_CAP2 = 0x24;
/** Port register blocks start here, one per AHCI_STEP bytes. */
export const AHCI_OFFSET = 0x100;
export const AHCI_STEP = 0x80;

export const AHCI_CAP_SXS = 0x00000020;
export const AHCI_CAP_NCS_SHIFT = 8;
export const AHCI_CAP_PSC = 0x00002000;
export const AHCI_CAP_SSC = 0x00004000;
export const AHCI_CAP_PMD = 0x00008000;
export const AHCI_CAP_ISS_SHIFT = 20;
export const AHCI_CAP_SCLO = 0x01000000;
export const AHCI_CAP_SAL = 0x02000000;
export const AHCI_CAP_SALP = 0x04000000;
export const AHCI_CAP_SSS = 0x08000000;
export const AHCI_CAP_SMPS = 0x10000000;
export const AHCI_CAP_SSNTF = 0x20000000;
export const AHCI_CAP_SNCQ = 0x40000000;
export const AHCI_CAP_64BIT = 0x80000000;
export const AHCI_CAP2_APST = 0x00000004;

export const AHCI_GHC_HR = 0x00000001;
export const AHCI_GHC_IE = 0x00000002;
export const AHCI_GHC_AE = 0x80000000;

/** Port registers (offsets inside a port block). */
export const AHCI_P_CLB = 0x00;
export const AHCI_P_CLBU = 0x04;
export const AHCI_P_FB = 0x08;
export const AHCI_P_FBU = 0x0c;
export const AHCI_P_IS = 0x10;
export const AHCI_P_IE = 0x14;
export const AHCI_P_CMD = 0x18;
export const AHCI_P_TFD = 0x20;
export const AHCI_P_SIG = 0x24;
export const AHCI_P_SSTS = 0x28;
export const AHCI_P_SCTL = 0x2c;
export const AHCI_P_SERR = 0x30;
export const AHCI_P_SACT = 0x34;
export const AHCI_P_CI = 0x38;
export const AHCI_P_SNTF = 0x3c;
export const AHCI_P_FBS = 0x40;

/** PxIS / PxIE bits. */
export const AHCI_P_IX_DHR = 0x00000001;
export const AHCI_P_IX_PS = 0x00000002;
export const AHCI_P_IX_SDB = 0x00000008;
export const AHCI_P_IX_HBD = 0x10000000;
export const AHCI_P_IX_TFE = 0x40000000;

/** PxCMD bits. */
export const AHCI_P_CMD_ST = 0x00000001;
export const AHCI_P_CMD_SUD = 0x00000002;
export const AHCI_P_CMD_POD = 0x00000004;
export const AHCI_P_CMD_CLO = 0x00000008;
export const AHCI_P_CMD_FRE = 0x00000010;
export const AHCI_P_CMD_CCS_MASK = 0x00001f00;
export const AHCI_P_CMD_CCS_SHIFT = 8;
export const AHCI_P_CMD_FR = 0x00004000;
export const AHCI_P_CMD_CR = 0x00008000;
export const AHCI_P_CMD_CPS = 0x00010000;
export const AHCI_P_CMD_APSTE = 0x00800000;
export const AHCI_P_CMD_ATAPI = 0x01000000;
export const AHCI_P_CMD_DLAE = 0x02000000;
export const AHCI_P_CMD_ALPE = 0x04000000;
export const AHCI_P_CMD_ASP = 0x08000000;
export const AHCI_P_CMD_ICC_MASK = 0xf0000000;

/** Command list: 32 headers of 32 bytes; received-FIS area: 256 bytes. */
export const AHCI_CL_SIZE = 32;
export const AHCI_MAX_SLOTS = 32;
export const AHCI_RFIS_SIZE = 256;
/** Command table: CFIS at 0, ATAPI command at 0x40, PRDT at 0x80. */
export const AHCI_CT_ACMD = 0x40;
export const AHCI_CT_PRDT = 0x80;
export const AHCI_PRDT_ENTRY = 16;
export const DBCMASK = 0x3fffff;

/** SATA status / control. */
export const ATA_SS_DET_NO_DEVICE = 0x0;
export const ATA_SS_DET_PHY_ONLINE = 0x3;
export const ATA_SS_SPD_GEN3 = 0x30;
export const ATA_SS_SPD_MASK = 0xf0;
export const ATA_SS_IPM_ACTIVE = 0x100;
export const ATA_SC_DET_RESET = 0x1;
export const ATA_SC_SPD_MASK = 0xf0;

/** Signatures after reset. */
export const PxSIG_ATA = 0x00000101;
export const PxSIG_ATAPI = 0xeb140101;

/** FIS types. */
export const FIS_TYPE_REGH2D = 0x27;
export const FIS_TYPE_REGD2H = 0x34;
export const FIS_TYPE_PIOSETUP = 0x5f;
export const FIS_TYPE_SETDEVBITS = 0xa1;

/** ATA status and error register bits. */
export const ATA_S_ERROR = 0x01;
export const ATA_S_DRQ = 0x08;
export const ATA_S_DSC = 0x10;
export const ATA_S_DMA = 0x20;
export const ATA_S_READY = 0x40;
export const ATA_S_BUSY = 0x80;
export const ATA_E_ABORT = 0x04;
/** ATAPI interrupt reason (sector count register). */
export const ATA_I_CMD = 0x01;
export const ATA_I_IN = 0x02;

/** ATA commands. */
export const ATA_NOP = 0x00;
export const ATA_DATA_SET_MANAGEMENT = 0x06;
export const ATA_DSM_TRIM = 0x01;
export const ATA_READ = 0x20;
export const ATA_READ48 = 0x24;
export const ATA_READ_DMA48 = 0x25;
export const ATA_READ_MUL48 = 0x29;
export const ATA_READ_LOG_EXT = 0x2f;
export const ATA_WRITE = 0x30;
export const ATA_WRITE48 = 0x34;
export const ATA_WRITE_DMA48 = 0x35;
export const ATA_WRITE_MUL48 = 0x39;
export const ATA_READ_VERIFY = 0x40;
export const ATA_READ_VERIFY48 = 0x42;
export const ATA_READ_LOG_DMA_EXT = 0x47;
export const ATA_READ_FPDMA_QUEUED = 0x60;
export const ATA_WRITE_FPDMA_QUEUED = 0x61;
export const ATA_SEND_FPDMA_QUEUED = 0x64;
export const ATA_SFPDMA_DSM = 0x00;
export const ATA_PACKET_CMD = 0xa0;
export const ATA_ATAPI_IDENTIFY = 0xa1;
export const ATA_SMART_CMD = 0xb0;
export const ATA_READ_MUL = 0xc4;
export const ATA_WRITE_MUL = 0xc5;
export const ATA_SET_MULTI = 0xc6;
export const ATA_READ_DMA = 0xc8;
export const ATA_WRITE_DMA = 0xca;
export const ATA_STANDBY_IMMEDIATE = 0xe0;
export const ATA_IDLE_IMMEDIATE = 0xe1;
export const ATA_STANDBY_CMD = 0xe2;
export const ATA_IDLE_CMD = 0xe3;
export const ATA_CHECK_POWER_MODE = 0xe5;
export const ATA_SLEEP = 0xe6;
export const ATA_FLUSHCACHE = 0xe7;
export const ATA_FLUSHCACHE48 = 0xea;
export const ATA_ATA_IDENTIFY = 0xec;
export const ATA_SETFEATURES = 0xef;
export const ATA_SECURITY_FREEZE_LOCK = 0xf5;

/** SET FEATURES subcommands. */
export const ATA_SF_ENAB_WCACHE = 0x02;
export const ATA_SF_SETXFER = 0x03;
export const ATA_SF_ENAB_SATA_SF = 0x10;
export const ATA_SATA_SF_AN = 0x05;
export const ATA_SF_DIS_RCACHE = 0x55;
export const ATA_SF_DIS_WCACHE = 0x82;
export const ATA_SF_ENAB_RCACHE = 0xaa;

/** Transfer modes (SET FEATURES / SETXFER). */
export const ATA_PIO = 0x00;
export const ATA_PIO0 = 0x08;
export const ATA_WDMA0 = 0x20;
export const ATA_UDMA0 = 0x40;
export const ATA_UDMA6 = 0x46;

/** SCSI (ATAPI) opcodes and sense keys: the shared SCSI definitions. */
export {
  GET_CONFIGURATION, GET_EVENT_STATUS_NOTIFICATION, INQUIRY, MODE_SENSE_10, MODEPAGE_CD_CAPABILITIES,
  MODEPAGE_RW_ERROR_RECOVERY, PREVENT_ALLOW, READ_10, READ_12, READ_CAPACITY, READ_TOC, REPORT_LUNS, REQUEST_SENSE,
  START_STOP_UNIT, TEST_UNIT_READY,
  SENSE_NOT_READY as ATA_SENSE_NOT_READY, SENSE_ILLEGAL_REQUEST as ATA_SENSE_ILLEGAL_REQUEST,
  SENSE_UNIT_ATTENTION as ATA_SENSE_UNIT_ATTENTION,
} from '../scsi/scsi-defs.js';
