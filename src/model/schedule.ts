// optimizer.schedule: the learning rate of each training step, with Keras 3's formulas, its epochs counted in steps
// of this run (steps_per_epoch): CosineDecay (warmup included), ExponentialDecay and PiecewiseConstantDecay take the
// step (the optimizer's iterations before it, from 0), and ReduceLROnPlateau changes the rate at epoch ends.
// Plain numbers, no TensorFlow: the loop sets the optimizer's rate from them before each step.
import { goalSign, metricGoal } from '../config/metrics.ts';
import type { OptimizerConfig, ScheduleConfig } from '../config/types.ts';
import type { EpochLogs } from '../events.ts';

export interface Schedule {
  /** The rate of the step that follows `step` steps. */
  rate(step: number): number;
  /** ReduceLROnPlateau's look at an epoch's logs (after they logged the epoch's rate); the others ignore it. */
  observe(logs: EpochLogs): void;
  /** What a backup keeps of the schedule (ReduceLROnPlateau's state), and its restore. */
  state(): PlateauState | undefined;
  restore(state: PlateauState | undefined): void;
}

export interface PlateauState {
  rate: number;
  /** The best monitored value times its goal's sign (larger is better); null for -Infinity in JSON. */
  best: number | null;
  wait: number;
  cooldown: number;
}

/** The optimizer's rate at every step: constant without a schedule. */
export function createSchedule(cfg: OptimizerConfig, stepsPerEpoch: number, epochs: number): Schedule {
  const s = cfg.schedule;
  const constant = (rate: (step: number) => number): Schedule => ({
    rate,
    observe: () => {},
    state: () => undefined,
    restore: () => {},
  });
  if (!s) return constant(() => cfg.learning_rate);
  switch (s.type) {
    case 'cosine': {
      const warmupSteps = (s.warmup_epochs ?? 0) * stepsPerEpoch;
      const decaySteps = (epochs - (s.warmup_target === undefined ? 0 : (s.warmup_epochs ?? 0))) * stepsPerEpoch;
      return constant((step) => cosineDecay(step, cfg.learning_rate, decaySteps, s, warmupSteps));
    }
    case 'exponential':
      return constant((step) => {
        const p = step / ((s.decay_epochs ?? 1) * stepsPerEpoch);
        return cfg.learning_rate * (s.decay_rate ?? 1) ** (s.staircase ? Math.floor(p) : p);
      });
    case 'piecewise': {
      const boundaries = (s.boundaries ?? []).map((b) => b * stepsPerEpoch);
      const values = s.values ?? [cfg.learning_rate];
      return constant((step) => {
        const i = boundaries.findIndex((b) => step <= b);
        return values[i < 0 ? boundaries.length : i];
      });
    }
    case 'plateau':
      return plateau(cfg.learning_rate, s);
  }
}

/** Keras 3's CosineDecay(initial, decay_steps, alpha, warmup_target, warmup_steps) at `step`. */
function cosineDecay(step: number, initial: number, decaySteps: number, s: ScheduleConfig, warmupSteps: number) {
  const alpha = s.alpha ?? 0;
  const decay = (at: number, from: number) => {
    const cosine = 0.5 * (1 + Math.cos((Math.PI * at) / decaySteps));
    return from * ((1 - alpha) * cosine + alpha);
  };
  // Without a warmup target Keras ignores warmup_steps.
  if (s.warmup_target === undefined) return decay(Math.min(step, decaySteps), initial);
  const at = Math.min(step, decaySteps + warmupSteps);
  if (at < warmupSteps) return (s.warmup_target - initial) * (at / warmupSteps) + initial;
  return decay(at - warmupSteps, s.warmup_target);
}

// Keras 3's ReduceLROnPlateau.on_epoch_end, with xp's direction of the monitored metric (config/metrics.ts) where
// Keras' `auto` only maximizes names with "acc".
function plateau(initial: number, s: ScheduleConfig): Schedule {
  const monitor = s.monitor ?? 'val_loss';
  const sign = goalSign(metricGoal(monitor));
  const factor = s.factor ?? 0.1;
  const patience = s.patience ?? 10;
  const minDelta = s.min_delta ?? 1e-4;
  const minLr = s.min_lr ?? 0;
  let state = { rate: initial, best: -Infinity, wait: 0, cooldown: 0 };
  return {
    rate: () => state.rate,
    observe(logs) {
      const value = logs[monitor as keyof EpochLogs];
      if (typeof value !== 'number') return; // Keras warns and changes nothing
      const current = value * sign;
      if (state.cooldown > 0) {
        state.cooldown--;
        state.wait = 0;
      }
      if (current - minDelta > state.best) {
        state.best = current;
        state.wait = 0;
      } else if (state.cooldown === 0) {
        // Keras asks whether it is in cooldown after the count went down: the last cooldown epoch counts.
        state.wait++;
        if (state.wait >= patience && state.rate > Math.fround(minLr)) {
          state.rate = Math.max(state.rate * factor, minLr);
          state.cooldown = s.cooldown ?? 0;
          state.wait = 0;
        }
      }
    },
    state: () => ({ ...state, best: Number.isFinite(state.best) ? state.best : null }),
    restore(saved) {
      if (saved) state = { ...saved, best: saved.best ?? -Infinity };
    },
  };
}
