// optimizer.schedule against Keras' own schedule classes and ReduceLROnPlateau (test/fixtures/keras/reference.py):
// xp's rate at every step of a 6-epoch run of 7 steps per epoch, and past its end, to 1e-7.
import { describe, expect, it } from 'vitest';
import { createSchedule } from '../../src/model/schedule.ts';
import type { EpochLogs } from '../../src/events.ts';
import type { OptimizerConfig, ScheduleConfig } from '../../src/config/types.ts';
import reference from '../fixtures/keras/reference.json' with { type: 'json' };

const { steps_per_epoch: steps, epochs } = reference.schedules;
const optimizer = (learning_rate: number, schedule: ScheduleConfig): OptimizerConfig => ({
  name: 'sgd',
  learning_rate,
  schedule,
});

describe('optimizer.schedule', () => {
  for (const r of reference.schedules.values) {
    const schedule = r.schedule as ScheduleConfig;
    it(`${JSON.stringify(schedule)} gives Keras' rate at every step`, () => {
      const s = createSchedule(optimizer(r.learning_rate, schedule), steps, epochs);
      const rates = r.rates.map((_, step) => s.rate(step));
      for (const [step, rate] of rates.entries()) {
        expect(Math.abs(rate - r.rates[step]), `step ${step}: ${rate} vs Keras ${r.rates[step]}`).toBeLessThan(1e-7);
        // And within a millionth of the schedule's largest rate (Keras computes in float32).
        expect(Math.abs(rate - r.rates[step]) / Math.max(...r.rates), `step ${step}`).toBeLessThan(1e-6);
      }
      expect(new Set(rates).size, 'the rate changes').toBeGreaterThan(2);
    });
  }

  it("plateau lowers the rate as Keras' ReduceLROnPlateau does (patience, cooldown, min_lr)", () => {
    const p = reference.schedules.plateau;
    const s = createSchedule(optimizer(p.learning_rate, p.schedule as ScheduleConfig), steps, epochs);
    const logged = p.val_loss.map((val_loss) => {
      const rate = s.rate(0);
      s.observe({ val_loss } as EpochLogs);
      return rate;
    });
    for (const [epoch, rate] of logged.entries())
      expect(Math.abs(rate - p.rates[epoch]), `epoch ${epoch}`).toBeLessThan(1e-7);
  });

  it('plateau resumes from its state', () => {
    const p = reference.schedules.plateau;
    const config = optimizer(p.learning_rate, p.schedule as ScheduleConfig);
    const whole = createSchedule(config, steps, epochs);
    const first = createSchedule(config, steps, epochs);
    for (const val_loss of p.val_loss.slice(0, 7)) {
      whole.observe({ val_loss } as EpochLogs);
      first.observe({ val_loss } as EpochLogs);
    }
    const resumed = createSchedule(config, steps, epochs);
    resumed.restore(JSON.parse(JSON.stringify(first.state())));
    for (const val_loss of p.val_loss.slice(7)) {
      whole.observe({ val_loss } as EpochLogs);
      resumed.observe({ val_loss } as EpochLogs);
      expect(resumed.rate(0)).toBe(whole.rate(0));
    }
  });

  it('is the constant learning_rate without a schedule', () => {
    const s = createSchedule({ name: 'adam', learning_rate: 0.003 }, steps, epochs);
    expect([0, 10, 100].map((step) => s.rate(step))).toEqual([0.003, 0.003, 0.003]);
  });
});
