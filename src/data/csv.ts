/**
 * `csvDataset`: streams a CSV file row by row into `{ xs, ys }` elements, as Keras'
 * `make_csv_dataset` and tfjs' `tf.data.csv` do. The file is read in chunks from a read stream
 * (at most one chunk and one line in memory), so a file far larger than memory trains fine.
 */
import { createReadStream } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { Tensor } from "../tensor.ts";
import { Dataset } from "./dataset.ts";

/** Options of {@link csvDataset}. */
export interface CsvOptions {
  /** The column that becomes `ys`, a scalar per row (so a batch of labels is `[batch]`). */
  label?: string;
  /** Several label columns: `ys` is then `[labels.length]` per row. Excludes `label`. */
  labels?: string[];
  /**
   * The feature columns, in the order they go into `xs`. Default: every column that is not a
   * label. When the file has no header row, these name the file's columns instead (all of
   * them, in file order), and `xs` is every non-label column.
   */
  columns?: string[];
  /** The first line names the columns. Default true. */
  header?: boolean;
  /** Field separator, a single character. Default ",". */
  delimiter?: string;
  /** The value of an empty field, by column. Without one, an empty field is an error. */
  columnDefaults?: Record<string, number>;
  /**
   * String-valued columns: each value becomes its index in the given vocabulary (for a label
   * column, the class index). A value outside the vocabulary is an error naming the line.
   */
  categorical?: Record<string, readonly string[]>;
  /** Longest line accepted, in characters, so a file without newlines cannot fill memory. Default 1 MiB. */
  maxLineLength?: number;
}

/** One row of a CSV file with a label: features and label(s). */
export interface CsvRow {
  /** The feature columns, `[nFeatures]`. */
  xs: Tensor;
  /** The label: shape `[]` with `label`, `[labels.length]` with `labels`. */
  ys: Tensor;
}

/** One row of a CSV file without labels (for prediction). */
export interface CsvFeatures {
  /** The feature columns, `[nFeatures]`. */
  xs: Tensor;
}

const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

/**
 * A Dataset over the rows of the CSV file at `path`: `{ xs: Tensor[nFeatures], ys }` per row,
 * ready for `.shuffle(...).batch(...)`. Every field must be a decimal number, unless its column
 * has a `categorical` vocabulary or (when empty) a `columnDefaults` entry. A bad row (wrong field
 * count, a non-number) rejects the iteration with an Error naming `path:line` and the column. The
 * header is read when iteration starts, so option errors about column names surface there too.
 * Quoted fields (`"a,b"`, `""` for a quote) are read; a field spanning lines is not supported.
 */
export function csvDataset(
  path: string,
  options: CsvOptions & ({ label: string } | { labels: string[] }),
): Dataset<CsvRow>;
export function csvDataset(path: string, options?: CsvOptions): Dataset<CsvFeatures>;
export function csvDataset(path: string, options: CsvOptions = {}): Dataset<CsvRow | CsvFeatures> {
  if (options.label !== undefined && options.labels !== undefined) {
    throw new TypeError("csvDataset: give `label` or `labels`, not both");
  }
  const delimiter = options.delimiter ?? ",";
  if (delimiter.length !== 1 || delimiter === '"' || delimiter === "\n" || delimiter === "\r") {
    throw new TypeError(
      `csvDataset: delimiter must be one character other than a quote or newline, got ${JSON.stringify(delimiter)}`,
    );
  }
  const header = options.header ?? true;
  if (!header && !options.columns) {
    throw new TypeError("csvDataset: a file without a header needs `columns` to name its columns");
  }
  const maxLineLength = options.maxLineLength ?? 1 << 20;
  return Dataset.fromGenerator(() => readRows(path, options, delimiter, header, maxLineLength));
}

/** Where each output value comes from and how its text becomes a number. */
interface Plan {
  fieldCount: number;
  names: string[];
  features: number[];
  labels: number[] | undefined;
  scalarLabel: boolean;
  /** Per column: its text to a number, or an Error naming `path:line` and the column. */
  parsers: ((text: string, lineNo: number) => number)[];
}

function makePlan(path: string, names: string[], options: CsvOptions, header: boolean): Plan {
  const index = new Map(names.map((n, i) => [n, i]));
  const find = (name: string, what: string) => {
    const i = index.get(name);
    if (i === undefined) {
      throw new Error(`csvDataset: ${path}: ${what} column "${name}" is not among the columns [${names.join(", ")}]`);
    }
    return i;
  };
  const labelNames = options.label !== undefined ? [options.label] : options.labels;
  const labels = labelNames?.map((n) => find(n, "label"));
  const isLabel = new Set(labels ?? []);
  const features =
    header && options.columns
      ? options.columns.map((n) => find(n, "feature"))
      : names.map((_, i) => i).filter((i) => !isLabel.has(i));
  for (const name of [...Object.keys(options.columnDefaults ?? {}), ...Object.keys(options.categorical ?? {})]) {
    find(name, "configured");
  }
  const parsers = names.map((name, column) => {
    const fallback = options.columnDefaults?.[name];
    const vocabulary = options.categorical?.[name];
    const lookup = vocabulary ? new Map(vocabulary.map((v, i) => [v, i])) : undefined;
    const where = (lineNo: number) => `csvDataset: ${path}:${lineNo}, column ${column + 1} ("${name}")`;
    return (text: string, lineNo: number): number => {
      // The common case first: a well-formed number (the regex keeps out what Number() also
      // accepts but a CSV of numbers should not hold: "", "0x1f", "Infinity").
      if (!lookup && NUMBER.test(text)) return Number(text);
      const t = text.trim();
      if (t === "" && fallback !== undefined) return fallback;
      if (lookup) {
        const v = lookup.get(t);
        if (v === undefined) {
          throw new Error(`${where(lineNo)}: "${t}" is not in the column's categorical vocabulary`);
        }
        return v;
      }
      throw new Error(
        `${where(lineNo)}: ${t === "" ? "empty field" : `"${t}" is not a number`} ` +
          "(give `columnDefaults` for empty fields or `categorical` for string columns)",
      );
    };
  });
  return {
    fieldCount: names.length,
    names,
    features,
    labels,
    scalarLabel: options.label !== undefined,
    parsers,
  };
}

/** Splits one line into fields, honouring double quotes. */
function splitFields(line: string, delimiter: string): string[] {
  if (!line.includes('"')) return line.split(delimiter);
  const fields: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === delimiter) {
      fields.push(field);
      field = "";
    } else field += ch;
  }
  fields.push(field);
  return fields;
}

/**
 * The file's lines, a block per chunk read (one await per chunk, not per line: rows are cheap
 * and per-line async hops dominated), with the 1-based number of each block's first line.
 */
async function* lineBlocks(path: string, maxLineLength: number): AsyncGenerator<{ lines: string[]; first: number }> {
  const stream = createReadStream(path, { highWaterMark: 256 * 1024 });
  const decoder = new StringDecoder("utf8");
  let rest = "";
  let next = 1;
  try {
    for await (const chunk of stream) {
      const text = rest + decoder.write(chunk as Buffer);
      const lines = text.split("\n");
      rest = lines.pop() as string;
      for (let k = 0; k < lines.length; k++) {
        const line = lines[k];
        if (line.length > maxLineLength) throw lineTooLong(path, next + k, maxLineLength);
        if (line.endsWith("\r")) lines[k] = line.slice(0, -1);
      }
      if (rest.length > maxLineLength) throw lineTooLong(path, next + lines.length, maxLineLength);
      if (lines.length > 0) yield { lines, first: next };
      next += lines.length;
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code) throw new Error(`csvDataset: cannot read ${path}: ${(error as Error).message}`);
    throw error;
  } finally {
    stream.destroy();
  }
  rest += decoder.end();
  if (rest.endsWith("\r")) rest = rest.slice(0, -1);
  if (rest.length > 0) yield { lines: [rest], first: next };
}

function lineTooLong(path: string, line: number, max: number): Error {
  return new Error(`csvDataset: ${path}:${line}: line longer than maxLineLength (${max} characters)`);
}

async function* readRows(
  path: string,
  options: CsvOptions,
  delimiter: string,
  header: boolean,
  maxLineLength: number,
): AsyncGenerator<CsvRow | CsvFeatures> {
  let plan: Plan | undefined = header ? undefined : makePlan(path, options.columns ?? [], options, false);
  for await (const { lines, first } of lineBlocks(path, maxLineLength)) {
    for (let k = 0; k < lines.length; k++) {
      const line = lines[k];
      const lineNo = first + k;
      if (line.trim() === "") continue;
      const fields = splitFields(line, delimiter);
      if (!plan) {
        plan = makePlan(
          path,
          fields.map((f) => f.trim()),
          options,
          true,
        );
        continue;
      }
      if (fields.length !== plan.fieldCount) {
        throw new Error(`csvDataset: ${path}:${lineNo}: expected ${plan.fieldCount} fields, got ${fields.length}`);
      }
      const { features, labels, parsers } = plan;
      const xs = new Float32Array(features.length);
      for (let j = 0; j < features.length; j++) xs[j] = parsers[features[j]](fields[features[j]], lineNo);
      if (!labels) {
        yield { xs: new Tensor(xs, [xs.length]) };
        continue;
      }
      const ys = new Float32Array(labels.length);
      for (let j = 0; j < labels.length; j++) ys[j] = parsers[labels[j]](fields[labels[j]], lineNo);
      yield { xs: new Tensor(xs, [xs.length]), ys: new Tensor(ys, plan.scalarLabel ? [] : [ys.length]) };
    }
  }
  if (!plan) throw new Error(`csvDataset: ${path} is empty (no header line)`);
}
