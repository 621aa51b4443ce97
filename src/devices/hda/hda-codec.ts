// bhyve's HDA codec (hda_codec.c): one codec at address 0 with a root
// node (NID 0), an audio function group (NID 1) and, for play=, an audio
// output converter (NID 2) feeding a line-out pin (NID 3); for rec=, an
// audio input converter (NID 4) fed by a line-in pin (NID 5). With both,
// the function group holds all four (duplex). The parameters, connection
// lists, default configurations and pin controls are bhyve's tables; the
// converters keep their format, stream/channel and amplifier gain/mute.
//
// Verbs (12-bit verb when bits 18:16 of the command are all set, else a
// 4-bit verb with a 16-bit payload): GET_PARAMETER, GET_CONN_LIST_ENTRY,
// GET_PIN_WIDGET_CTRL, GET_PIN_SENSE (always plugged),
// GET_CONFIGURATION_DEFAULT, GET_SUBSYSTEM_ID on every node; on the
// converters GET/SET_CONV_FMT, GET/SET_AMP_GAIN_MUTE and
// GET/SET_CONV_STREAM_CHAN. Anything else (and any NID past the last
// node, or a parameter past bhyve's table) answers 0, as bhyve answers
// verbs it does not know.
//
// Moving samples: bhyve runs a thread per converter that asks the
// controller for 256-byte pieces and blocks in write(2)/read(2) on
// /dev/dsp, which paces it. Here a device timer paces each running
// converter at its format's byte rate (rate x channels x container size):
// every tick moves the bytes that became due between the BDL buffers and
// the PCM file (hda-audio.ts), which updates LPIB and the position buffer
// and raises IOC interrupts in the controller. Ticks come every 10 ms, or
// sooner when a BDL entry with IOC ends before, so its interrupt is on time.

import type { DeviceTimer } from '../device.js';
import { PcmFile, type AudioParams } from './hda-audio.js';

export const HDA_CODEC_ROOT_NID = 0x00;
export const HDA_CODEC_FG_NID = 0x01;
export const HDA_CODEC_AUDIO_OUTPUT_NID = 0x02;
export const HDA_CODEC_PIN_OUTPUT_NID = 0x03;
export const HDA_CODEC_AUDIO_INPUT_NID = 0x04;
export const HDA_CODEC_PIN_INPUT_NID = 0x05;
const NODES = 6;
const PARAMS = 0x14;

// Verbs (hda_reg.h)
export const VERB = {
  GET_PARAMETER: 0xf00, GET_CONN_LIST_ENTRY: 0xf02, GET_CONV_STREAM_CHAN: 0xf06, SET_CONV_STREAM_CHAN: 0x706,
  GET_PIN_WIDGET_CTRL: 0xf07, GET_PIN_SENSE: 0xf09, GET_CONFIGURATION_DEFAULT: 0xf1c, GET_SUBSYSTEM_ID: 0xf20,
  // 4-bit verbs
  GET_CONV_FMT: 0xa, SET_CONV_FMT: 0x2, GET_AMP_GAIN_MUTE: 0xb, SET_AMP_GAIN_MUTE: 0x3,
} as const;

// Parameters (hda_reg.h)
export const PARAM = {
  VENDOR_ID: 0x00, REVISION_ID: 0x02, SUB_NODE_COUNT: 0x04, FCT_GRP_TYPE: 0x05, AUDIO_FCT_GRP_CAP: 0x08,
  AUDIO_WIDGET_CAP: 0x09, SUPP_PCM_SIZE_RATE: 0x0a, SUPP_STREAM_FORMATS: 0x0b, PIN_CAP: 0x0c, INPUT_AMP_CAP: 0x0d,
  CONN_LIST_LENGTH: 0x0e, SUPP_POWER_STATES: 0x0f, PROCESSING_CAP: 0x10, GPIO_COUNT: 0x11, OUTPUT_AMP_CAP: 0x12,
  VOLUME_KNOB_CAP: 0x13,
} as const;

const INTEL_VENDORID = 0x8086;
const SUBSYSTEM_ID = ((INTEL_VENDORID << 16) | 0x01) >>> 0;
export const AMP_NUMSTEPS = 0x4a;
const AMP_MUTE = 0x80;

const WCAP_TYPE_SHIFT = 20;
const WCAP_OUTPUT = 0x0 << WCAP_TYPE_SHIFT;
const WCAP_INPUT = 0x1 << WCAP_TYPE_SHIFT;
const WCAP_PIN = 0x4 << WCAP_TYPE_SHIFT;
const WCAP_CONN_LIST = 1 << 8;
const WCAP_FORMAT_OVR = 1 << 4;
const WCAP_AMP_OVR = 1 << 3;
const WCAP_OUT_AMP = 1 << 2;
const WCAP_IN_AMP = 1 << 1;
const WCAP_STEREO = 1 << 0;
const PIN_CAP_OUTPUT = 1 << 4;
const PIN_CAP_INPUT = 1 << 5;
const PIN_CAP_PRESENCE_DETECT = 1 << 2;
/** Mute capable, step size 3, 0x4a steps, offset 0x4a (0 dB at the top). */
const AMP_CAP = ((1 << 31) | (0x03 << 16) | (AMP_NUMSTEPS << 8) | AMP_NUMSTEPS) >>> 0;
const PCM_B16_16K_192K = (0x02 << 16) | 0x7fc;
const FORMATS_PCM = 1;
const PIN_SENSE_PRESENCE_PLUGGED = 0x80000000;
const PIN_CTRL_OUT_ENABLE = 1 << 6;
const PIN_CTRL_IN_ENABLE = 1 << 5;
/** Default configuration: jack, line out / line in (device 0x8), black /
 * red, associations 1 and 2. */
const CONF_LINE_OUT = (0x01 << 12) | (0x01 << 4);
const CONF_LINE_IN = (0x8 << 20) | (0x05 << 12) | (0x02 << 4);

type ParamTable = Array<Partial<Record<number, number>>>;

const ROOT = { [PARAM.VENDOR_ID]: INTEL_VENDORID, [PARAM.REVISION_ID]: 0xffff, [PARAM.SUB_NODE_COUNT]: 0x00010001 };
const FG_COMMON = {
  [PARAM.FCT_GRP_TYPE]: 0x01, // audio
  [PARAM.SUPP_PCM_SIZE_RATE]: (0x1f << 16) | 0x7ff, // 8-32 bits, 8-192 kHz
  [PARAM.SUPP_STREAM_FORMATS]: FORMATS_PCM,
  [PARAM.INPUT_AMP_CAP]: 0, [PARAM.OUTPUT_AMP_CAP]: 0, [PARAM.GPIO_COUNT]: 0,
};
const OUTPUT_NODES = {
  [HDA_CODEC_AUDIO_OUTPUT_NID]: {
    [PARAM.AUDIO_WIDGET_CAP]: WCAP_OUTPUT | WCAP_FORMAT_OVR | WCAP_AMP_OVR | WCAP_OUT_AMP | WCAP_STEREO,
    [PARAM.SUPP_PCM_SIZE_RATE]: PCM_B16_16K_192K, [PARAM.SUPP_STREAM_FORMATS]: FORMATS_PCM,
    [PARAM.INPUT_AMP_CAP]: 0, [PARAM.CONN_LIST_LENGTH]: 0, [PARAM.OUTPUT_AMP_CAP]: AMP_CAP,
  },
  [HDA_CODEC_PIN_OUTPUT_NID]: {
    [PARAM.AUDIO_WIDGET_CAP]: WCAP_PIN | WCAP_CONN_LIST | WCAP_STEREO,
    [PARAM.PIN_CAP]: PIN_CAP_OUTPUT | PIN_CAP_PRESENCE_DETECT,
    [PARAM.INPUT_AMP_CAP]: 0, [PARAM.CONN_LIST_LENGTH]: 1, [PARAM.OUTPUT_AMP_CAP]: 0,
  },
};
const INPUT_NODES = {
  [HDA_CODEC_AUDIO_INPUT_NID]: {
    [PARAM.AUDIO_WIDGET_CAP]: WCAP_INPUT | WCAP_CONN_LIST | WCAP_FORMAT_OVR | WCAP_AMP_OVR | WCAP_IN_AMP | WCAP_STEREO,
    [PARAM.SUPP_PCM_SIZE_RATE]: PCM_B16_16K_192K, [PARAM.SUPP_STREAM_FORMATS]: FORMATS_PCM,
    [PARAM.OUTPUT_AMP_CAP]: 0, [PARAM.CONN_LIST_LENGTH]: 1, [PARAM.INPUT_AMP_CAP]: AMP_CAP,
  },
  [HDA_CODEC_PIN_INPUT_NID]: {
    [PARAM.AUDIO_WIDGET_CAP]: WCAP_PIN | WCAP_STEREO,
    [PARAM.PIN_CAP]: PIN_CAP_INPUT | PIN_CAP_PRESENCE_DETECT,
    [PARAM.INPUT_AMP_CAP]: 0, [PARAM.OUTPUT_AMP_CAP]: 0,
  },
};

/** hda_codec_{output,input,duplex}_parameters. */
function parameterTable(play: boolean, rec: boolean): ParamTable {
  const t: ParamTable = new Array(NODES).fill(undefined).map(() => ({}));
  t[HDA_CODEC_ROOT_NID] = ROOT;
  // Sub node count: start NID << 16 | count.
  const subnodes = play && rec ? 0x00020004 : play ? 0x00020002 : 0x00040002;
  t[HDA_CODEC_FG_NID] = { [PARAM.SUB_NODE_COUNT]: subnodes, ...FG_COMMON };
  if (play) Object.assign(t, OUTPUT_NODES);
  if (rec) Object.assign(t, INPUT_NODES);
  return t;
}

const CONN_LIST: Record<number, number> = { [HDA_CODEC_PIN_OUTPUT_NID]: HDA_CODEC_AUDIO_OUTPUT_NID, [HDA_CODEC_AUDIO_INPUT_NID]: HDA_CODEC_PIN_INPUT_NID };
const CONF_DEFAULT: Record<number, number> = { [HDA_CODEC_PIN_OUTPUT_NID]: CONF_LINE_OUT, [HDA_CODEC_PIN_INPUT_NID]: CONF_LINE_IN };
const PIN_CTRL: Record<number, number> = { [HDA_CODEC_PIN_OUTPUT_NID]: PIN_CTRL_OUT_ENABLE, [HDA_CODEC_PIN_INPUT_NID]: PIN_CTRL_IN_ENABLE };

/** hda_codec_parse_format(): the stream format word (also SDnFMT's). */
export function parseFormat(fmt: number): AudioParams | undefined {
  let rate = fmt & 0x4000 ? 44100 : 48000;
  const mult = (fmt >> 11) & 7;
  if (mult === 1) rate *= 2;
  else if (mult === 2) rate *= 3;
  else if (mult === 3) rate *= 4;
  rate = Math.floor(rate / (((fmt >> 8) & 7) + 1));
  const bits = (fmt >> 4) & 7;
  const sampleBytes = bits === 0 ? 1 : bits === 1 ? 2 : bits === 3 || bits === 4 ? 4 : 0;
  if (sampleBytes === 0) return undefined; // 20-bit and the reserved codes: bhyve refuses them
  return { rate, sampleBytes, channels: (fmt & 0xf) + 1 };
}

/** What the codec asks of its controller (bhyve's struct hda_ops). */
export interface HdaOps {
  /** A codec state change (STATESTS). */
  signal(cad: number): void;
  /** A solicited response into the RIRB. */
  response(cad: number, response: number, unsol: boolean): void;
  /** Moves `count` bytes (a multiple of 4) of the stream with tag `stream`
   * between `buf` and its BDL buffers: dir 1 output (guest -> buf), 0
   * input (buf -> guest). False when no such stream runs. */
  transfer(stream: number, dir: 0 | 1, buf: Uint8Array, count: number): boolean;
  /** Bytes until the running stream with tag `stream` finishes a BDL entry
   * with IOC (undefined: none ahead, or no such stream). */
  untilIoc?(stream: number, dir: 0 | 1): number | undefined;
}

/** Longest tick of a running converter; a tick is shorter when an entry
 * with IOC ends sooner, so that its interrupt comes on time. */
const TICK_NS = 10_000_000n;
const MIN_TICK_NS = 1_000_000n;
/** Most a tick moves after a late wake-up: 100 ms of samples. */
const MAX_BURST_NS = 100_000_000;

/** One converter and its audio context (hda_codec_stream + hda_audio_ctxt). */
class CodecStream {
  fmt = 0;
  stream = 0;
  channel = 0;
  leftGain = AMP_NUMSTEPS;
  rightGain = AMP_NUMSTEPS;
  leftMute = AMP_MUTE;
  rightMute = AMP_MUTE;
  running = false;
  private byteRate = 0;
  private credit = 0;
  private last = 0n;
  private buf = new Uint8Array(0);
  /** Recorded bytes not yet handed over (a FIFO's odd remainder). */
  private carry = 0;
  readonly timer: DeviceTimer;
  /** Bytes moved by the timer (stats). */
  moved = 0;

  constructor(readonly dir: 0 | 1, readonly pcm: PcmFile, timer: (cb: () => void) => DeviceTimer, private readonly ops: HdaOps) {
    this.timer = timer(() => this.tick());
  }

  /** hda_audio_ctxt_start(): do_setup (parse the converter's format),
   * then run. False when the format is not one bhyve plays. */
  start(): boolean {
    if (this.running) return false;
    const p = parseFormat(this.fmt);
    if (!p) return false;
    this.byteRate = p.rate * p.channels * p.sampleBytes;
    this.running = true;
    this.credit = 0;
    this.last = this.timer.now();
    this.timer.armAt(this.last + this.nextTick());
    return true;
  }

  stop(): void {
    this.running = false;
    this.timer.cancel();
  }

  private tick(): void {
    if (!this.running) return;
    const now = this.timer.now();
    const elapsed = Math.min(Number(now - this.last), MAX_BURST_NS);
    this.last = now;
    this.credit = Math.min(this.credit + (elapsed * this.byteRate) / 1e9, (MAX_BURST_NS * this.byteRate) / 1e9);
    const n = Math.floor(this.credit / 4) * 4;
    if (n > 0) {
      if (this.buf.length < n) this.buf = new Uint8Array(Math.max(n, 4096));
      if (this.dir === 1) this.playTick(n);
      else this.recordTick(n);
    }
    if (this.running) this.timer.armAt(now + this.nextTick());
  }

  /** The time to the next tick: TICK_NS, or sooner when an IOC entry ends
   * before (at the byte rate, counting the credit already due). */
  private nextTick(): bigint {
    const until = this.ops.untilIoc?.(this.stream, this.dir);
    if (until === undefined || this.byteRate <= 0) return TICK_NS;
    const ns = BigInt(Math.ceil((Math.max(0, until - this.credit) * 1e9) / this.byteRate));
    return ns < MIN_TICK_NS ? MIN_TICK_NS : ns > TICK_NS ? TICK_NS : ns;
  }

  /** hda_codec_audio_output_do_transfer(). */
  private playTick(n: number): void {
    if (this.pcm.blocked) { this.credit = 0; return; } // the FIFO's reader paces us
    if (!this.ops.transfer(this.stream, 1, this.buf, n)) return;
    this.credit -= n;
    this.moved += n;
    this.pcm.play(this.buf.subarray(0, n));
  }

  /** hda_codec_audio_input_do_transfer(). */
  private recordTick(n: number): void {
    const got = this.carry + this.pcm.record(this.buf.subarray(this.carry, Math.max(n, this.carry)));
    const whole = Math.floor(got / 4) * 4;
    if (whole === 0) { this.carry = got; this.credit = Math.min(this.credit, n); return; }
    if (!this.ops.transfer(this.stream, 0, this.buf, whole)) { this.carry = 0; return; }
    this.credit -= whole;
    this.moved += whole;
    this.carry = got - whole;
    this.buf.copyWithin(0, whole, got);
  }
}

/** hda_codec_softc for one codec instance (hda_codec_inst). */
export class HdaCodec {
  readonly params: ParamTable;
  readonly output?: CodecStream;
  readonly input?: CodecStream;

  constructor(readonly cad: number, play: PcmFile | undefined, rec: PcmFile | undefined,
    timer: (cb: () => void) => DeviceTimer, private readonly ops: HdaOps) {
    this.params = parameterTable(play !== undefined, rec !== undefined);
    if (play) this.output = new CodecStream(1, play, timer, ops);
    if (rec) this.input = new CodecStream(0, rec, timer, ops);
  }

  /** hda_codec_reset(): amplifiers muted at full gain, then a state change. */
  reset(): void {
    for (const st of [this.output, this.input]) {
      if (!st) continue;
      st.leftGain = st.rightGain = AMP_NUMSTEPS;
      st.leftMute = st.rightMute = AMP_MUTE;
    }
    this.ops.signal(this.cad);
  }

  /** hda_codec_command(): answers every command with one response. */
  command(cmd: number): void {
    this.ops.response(this.cad, this.answer(cmd), false);
  }

  private answer(cmd: number): number {
    const nid = (cmd >>> 20) & 0xff;
    let verb: number;
    let payload: number;
    if ((cmd & 0x70000) === 0x70000) {
      verb = (cmd >>> 8) & 0xfff;
      payload = cmd & 0xff;
    } else {
      verb = (cmd >>> 16) & 0xf;
      payload = cmd & 0xffff;
    }
    if (nid >= NODES) return 0; // no such node: bhyve asserted; we answer 0
    switch (verb) {
      case VERB.GET_PARAMETER: return payload < PARAMS ? (this.params[nid][payload] ?? 0) >>> 0 : 0;
      case VERB.GET_CONN_LIST_ENTRY: return CONN_LIST[nid] ?? 0;
      case VERB.GET_PIN_WIDGET_CTRL: return PIN_CTRL[nid] ?? 0;
      case VERB.GET_PIN_SENSE: return PIN_SENSE_PRESENCE_PLUGGED >>> 0;
      case VERB.GET_CONFIGURATION_DEFAULT: return CONF_DEFAULT[nid] ?? 0;
      case VERB.GET_SUBSYSTEM_ID: return SUBSYSTEM_ID;
      default: {
        // Only the converters have verb handlers (hda_codec_verb_handlers).
        const st = nid === HDA_CODEC_AUDIO_OUTPUT_NID ? this.output : nid === HDA_CODEC_AUDIO_INPUT_NID ? this.input : undefined;
        return st ? this.converterVerb(st, verb, payload) : 0;
      }
    }
  }

  /** hda_codec_audio_inout_nid(). */
  private converterVerb(st: CodecStream, verb: number, payload: number): number {
    switch (verb) {
      case VERB.GET_CONV_FMT: return st.fmt;
      case VERB.SET_CONV_FMT: st.fmt = payload; return 0;
      case VERB.GET_AMP_GAIN_MUTE:
        return payload & 0x2000 ? st.leftGain | st.leftMute : st.rightGain | st.rightMute;
      case VERB.SET_AMP_GAIN_MUTE: {
        const mute = payload & AMP_MUTE;
        const gain = payload & 0x7f;
        if (payload & 0x2000) { st.leftMute = mute; st.leftGain = gain; }
        if (payload & 0x1000) { st.rightMute = mute; st.rightGain = gain; }
        return 0;
      }
      case VERB.GET_CONV_STREAM_CHAN: return (st.stream << 4) | st.channel;
      case VERB.SET_CONV_STREAM_CHAN:
        st.channel = payload & 0x0f;
        st.stream = (payload >> 4) & 0x0f;
        if (!st.stream) st.stop();
        return 0;
      default: return 0;
    }
  }

  /** hda_codec_notify(): a stream with tag `stream` started or stopped in
   * the controller (dir 1 output). True when this codec's converter has
   * that tag. */
  notify(run: boolean, stream: number, dir: 0 | 1): boolean {
    const st = dir === 1 ? this.output : this.input;
    if (!st || stream !== st.stream) return false;
    if (run) st.start();
    else st.stop();
    return true;
  }

  close(): void {
    for (const st of [this.output, this.input]) {
      if (!st) continue;
      st.stop();
      st.pcm.close();
    }
  }
}
