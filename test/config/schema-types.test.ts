// One source of truth: the JSON Schema. The TypeScript types and runtime lists in src/config/types.ts must agree.
import { describe, expect, it } from 'vitest';
import { schema } from '../../src/config/validate.ts';
import * as types from '../../src/config/types.ts';
import type {
  AugmentationConfig,
  BackboneConfig,
  DataConfig,
  Experiment,
  HeadConfig,
  OptimizerConfig,
  TrackingConfig,
  TrainingConfig,
} from '../../src/config/types.ts';

// Compile-time: each record must name every key of its type (and only those), so a type change shows up here.
const sections = {
  '': {
    name: 1,
    description: 1,
    data: 1,
    backbone: 1,
    head: 1,
    augmentation: 1,
    optimizer: 1,
    training: 1,
    sweep: 1,
    tracking: 1,
  } satisfies Record<keyof Experiment, 1>,
  data: {
    url: 1,
    sha256: 1,
    train: 1,
    validation: 1,
    image_size: 1,
    batch_size: 1,
    class_mode: 1,
    interpolation: 1,
    max_per_class: 1,
    follow_links: 1,
  } satisfies Record<keyof DataConfig, 1>,
  backbone: { name: 1, weights: 1, cut_layer: 1, trainable: 1, trainable_from: 1, preprocessing: 1 } satisfies Record<
    keyof BackboneConfig,
    1
  >,
  head: { pooling: 1, units: 1, activation: 1, dropout: 1 } satisfies Record<keyof HeadConfig, 1>,
  augmentation: {
    rotation_range: 1,
    width_shift_range: 1,
    height_shift_range: 1,
    shear_range: 1,
    zoom_range: 1,
    horizontal_flip: 1,
    vertical_flip: 1,
    fill_mode: 1,
    cval: 1,
    brightness_range: 1,
  } satisfies Record<keyof AugmentationConfig, 1>,
  optimizer: {
    name: 1,
    learning_rate: 1,
    momentum: 1,
    nesterov: 1,
    rho: 1,
    epsilon: 1,
    beta_1: 1,
    beta_2: 1,
    schedule: 1,
  } satisfies Record<keyof OptimizerConfig, 1>,
  training: {
    epochs: 1,
    steps_per_epoch: 1,
    validation_steps: 1,
    seed: 1,
    class_weight: 1,
    label_smoothing: 1,
    metrics: 1,
    top_k: 1,
    early_stopping: 1,
    checkpoint: 1,
  } satisfies Record<keyof TrainingConfig, 1>,
  tracking: { enabled: 1, uri: 1, experiment_name: 1, register: 1 } satisfies Record<keyof TrackingConfig, 1>,
};

const propertiesOf = (section: string) => (section ? schema.properties[section].properties : schema.properties);

describe('schema and types agree', () => {
  for (const [section, keys] of Object.entries(sections)) {
    it(`${section || 'top level'}: the same fields`, () => {
      // `extends` composes files and is gone from the resolved experiment the types describe.
      expect(
        Object.keys(propertiesOf(section))
          .filter((k) => section || k !== 'extends')
          .sort(),
      ).toEqual(Object.keys(keys).sort());
    });
  }

  it('every runtime list of allowed values equals the schema enum', () => {
    const p = schema.properties;
    expect([...types.BACKBONE_NAMES]).toEqual(p.backbone.properties.name.enum);
    expect([...types.POOLINGS]).toEqual(p.head.properties.pooling.enum);
    expect([...types.HEAD_ACTIVATIONS]).toEqual(p.head.properties.activation.enum);
    expect([...types.OPTIMIZERS]).toEqual(p.optimizer.properties.name.enum);
    expect([...types.FILL_MODES]).toEqual(p.augmentation.properties.fill_mode.enum);
    expect([...types.INTERPOLATIONS]).toEqual(p.data.properties.interpolation.enum);
    expect([...types.CLASS_MODES]).toEqual(p.data.properties.class_mode.enum);
    expect([...types.PREPROCESSINGS]).toEqual(p.backbone.properties.preprocessing.enum);
    expect([...types.EXTRA_METRICS]).toEqual(p.training.properties.metrics.items.enum);
    const schedule = p.optimizer.properties.schedule;
    expect([...types.SCHEDULE_TYPES]).toEqual(schedule.properties.type.enum);
    // Every field of the schedule belongs to one type, and the types' fields are the schema's.
    const fields = Object.values(types.SCHEDULE_FIELDS).flat();
    expect(new Set(fields).size).toBe(fields.length);
    expect(['type', ...fields].sort()).toEqual(Object.keys(schedule.properties).sort());
  });

  it("ScheduleConfig names every field of the schema's schedule", () => {
    const keys = {
      type: 1,
      warmup_epochs: 1,
      warmup_target: 1,
      alpha: 1,
      decay_rate: 1,
      decay_epochs: 1,
      staircase: 1,
      boundaries: 1,
      values: 1,
      monitor: 1,
      factor: 1,
      patience: 1,
      min_delta: 1,
      min_lr: 1,
      cooldown: 1,
    } satisfies Record<keyof types.ScheduleConfig, 1>;
    expect(Object.keys(keys).sort()).toEqual(
      Object.keys(schema.properties.optimizer.properties.schedule.properties).sort(),
    );
  });
});

// Every property the schema declares, at any depth ($defs and sweep distributions included), as a dotted path.
function allProperties(node: any, at: string[] = []): { path: string; node: any }[] {
  if (!node || typeof node !== 'object') return [];
  const own = Object.entries(node.properties ?? {}).flatMap(([k, v]) => [
    { path: [...at, k].join('.'), node: v },
    ...allProperties(v, [...at, k]),
  ]);
  const nested = [
    ...Object.entries(node.$defs ?? {}).map(([k, v]) => allProperties(v, [...at, '$defs', k])),
    ...['items', 'additionalProperties'].map((k) => allProperties(node[k], [...at, k])),
    ...['oneOf', 'anyOf', 'allOf'].flatMap((k) =>
      (node[k] ?? []).map((v: unknown, i: number) => allProperties(v, [...at, k, String(i)])),
    ),
  ].flat();
  return [...own, ...nested];
}

describe('schema documentation', () => {
  it('every property of the schema has a non-empty description', () => {
    const properties = allProperties(schema);
    expect(properties.length).toBeGreaterThan(70);
    const undocumented = properties
      .filter((p) => typeof p.node.description !== 'string' || !p.node.description.trim())
      .map((p) => p.path);
    expect(undocumented).toEqual([]);
  });
});
