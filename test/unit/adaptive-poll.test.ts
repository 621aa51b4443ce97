// The iothread's spin window (src/devices/virtio/adaptive-poll.ts), QEMU's
// adjust_polling_time rules.
import { describe, expect, it } from 'vitest';
import { AdaptivePoll, HOLD_OFF, POLL_START_NS } from '../../src/devices/virtio/adaptive-poll.js';

describe('AdaptivePoll', () => {
  it('grows from 4 us, doubling while work comes within the maximum, and never past it', () => {
    const p = new AdaptivePoll(32_000);
    expect(p.windowNs).toBe(0);
    p.observe(10_000);
    expect(p.windowNs).toBe(POLL_START_NS);
    p.observe(10_000);
    expect(p.windowNs).toBe(8000);
    p.observe(10_000);
    expect(p.windowNs).toBe(16_000);
    p.observe(3000); // within the window: the sweet spot, unchanged
    expect(p.windowNs).toBe(16_000);
    p.observe(20_000);
    expect(p.windowNs).toBe(32_000);
    p.observe(31_000);
    expect(p.windowNs).toBe(32_000);
  });

  it('stops polling after a wait longer than the maximum (an idle guest, a starved thread)', () => {
    const p = new AdaptivePoll(32_000);
    for (let i = 0; i < 5; i++) p.observe(20_000);
    expect(p.windowNs).toBe(32_000);
    p.observe(5_000_000);
    expect(p.windowNs).toBe(0);
  });

  it('a maximum of 0 never polls', () => {
    const p = new AdaptivePoll(0);
    for (const w of [1, 1000, 4000, 0]) {
      p.observe(w);
      expect(p.windowNs).toBe(0);
    }
  });

  it('a preempted spin stops polling for HOLD_OFF batches, then it may grow again', () => {
    const p = new AdaptivePoll(32_000);
    for (let i = 0; i < 5; i++) p.observe(20_000);
    expect(p.windowNs).toBe(32_000);
    p.preempted();
    expect(p.windowNs).toBe(0);
    for (let i = 0; i < HOLD_OFF; i++) {
      p.observe(10_000);
      expect(p.windowNs).toBe(0);
    }
    p.observe(10_000);
    expect(p.windowNs).toBe(POLL_START_NS);
  });
});
