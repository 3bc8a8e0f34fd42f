// Just enough protobuf encoding to write a TensorFlow SavedModel (saved_model.pb).
// Field numbers from tensorflow/core/protobuf/{saved_model,meta_graph}.proto and
// tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape,types}.proto.

export class ProtoWriter {
  private parts: Buffer[] = [];

  private varint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value)); // negative int64 as two's complement, 10 bytes
    const bytes: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      bytes.push(byte);
    } while (v !== 0n);
    this.parts.push(Buffer.from(bytes));
  }

  private tag(field: number, wire: 0 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  bool(field: number, value: boolean): this {
    return this.int(field, value ? 1 : 0);
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.parts.push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array | string): this {
    const b =
      typeof value === 'string'
        ? Buffer.from(value, 'utf8')
        : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    this.tag(field, 2);
    this.varint(b.length);
    this.parts.push(b);
    return this;
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  packedInts(field: number, values: (number | bigint)[]): this {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export const DT_FLOAT = 1;
export const DT_INT32 = 3;

export type Attr =
  | { s: string }
  | { i: number }
  | { f: number }
  | { b: boolean }
  | { type: number }
  | { shape: number[] }
  | { ints: number[] }
  | { types: number[] }
  | { strings: string[] }
  | { tensor: { dtype: number; shape: number[]; content: Uint8Array } };

function writeShape(w: ProtoWriter, shape: number[]): void {
  for (const size of shape) w.message(2, (d) => d.int(1, size));
}

function writeAttr(w: ProtoWriter, attr: Attr): void {
  if ('s' in attr) w.bytes(2, attr.s);
  else if ('i' in attr) w.int(3, attr.i);
  else if ('f' in attr) w.float(4, attr.f);
  else if ('b' in attr) w.bool(5, attr.b);
  else if ('type' in attr) w.int(6, attr.type);
  else if ('shape' in attr) w.message(7, (s) => writeShape(s, attr.shape));
  else if ('ints' in attr) w.message(1, (l) => (attr.ints.length > 0 ? l.packedInts(3, attr.ints) : l));
  else if ('types' in attr) w.message(1, (l) => l.packedInts(6, attr.types));
  else if ('strings' in attr)
    w.message(1, (l) => {
      for (const s of attr.strings) l.bytes(2, s);
    });
  else
    w.message(8, (t) => {
      t.int(1, attr.tensor.dtype);
      t.message(2, (s) => writeShape(s, attr.tensor.shape));
      t.bytes(4, attr.tensor.content);
    });
}

export interface NodeDef {
  name: string;
  op: string;
  inputs: string[];
  attrs: Record<string, Attr>;
}

export interface TensorSpec {
  name: string; // graph tensor, e.g. "input:0"
  dtype: number;
  shape: number[]; // -1 for unknown
}

/** A SavedModel with one meta graph (tag "serve") and one signature. */
export function encodeSavedModel(
  nodes: NodeDef[],
  signature: { name: string; inputs: Record<string, TensorSpec>; outputs: Record<string, TensorSpec> },
  producer: number,
): Buffer {
  const tensorInfo = (w: ProtoWriter, spec: TensorSpec) => {
    w.bytes(1, spec.name)
      .int(2, spec.dtype)
      .message(3, (s) => writeShape(s, spec.shape));
  };
  const specs = (w: ProtoWriter, field: number, map: Record<string, TensorSpec>) => {
    for (const [key, spec] of Object.entries(map))
      w.message(field, (e) => e.bytes(1, key).message(2, (v) => tensorInfo(v, spec)));
  };
  return new ProtoWriter()
    .int(1, 1)
    .message(2, (meta) => {
      meta.message(1, (info) => info.bytes(4, 'serve'));
      meta.message(2, (graph) => {
        for (const node of nodes) {
          graph.message(1, (n) => {
            n.bytes(1, node.name).bytes(2, node.op);
            for (const input of node.inputs) n.bytes(3, input);
            for (const [key, attr] of Object.entries(node.attrs))
              n.message(5, (e) => e.bytes(1, key).message(2, (v) => writeAttr(v, attr)));
          });
        }
        graph.message(4, (v) => v.int(1, producer));
      });
      meta.message(5, (entry) =>
        entry.bytes(1, signature.name).message(2, (sig) => {
          specs(sig, 1, signature.inputs);
          specs(sig, 2, signature.outputs);
          sig.bytes(3, 'tensorflow/serving/predict');
        }),
      );
    })
    .finish();
}
