/** Dataset: construction, transformations, bounded read-ahead and error propagation. */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { Dataset, data, Tensor, tensor } from "../index.ts";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** A Dataset of 0..n-1 that records how many elements its source has produced so far. */
function counted(n: number): { ds: Dataset<number>; produced: () => number } {
  let produced = 0;
  const ds = Dataset.fromGenerator(async function* () {
    for (let i = 0; i < n; i++) {
      produced++;
      yield i;
    }
  });
  return { ds, produced: () => produced };
}

describe("Dataset construction", () => {
  it("is exported at the top level and under data", () => {
    expect(data.Dataset).toBe(Dataset);
  });

  it("starts a fresh pass on every iteration (re-iterable for several epochs)", async () => {
    let calls = 0;
    const ds = Dataset.fromGenerator(() => {
      calls++;
      return [1, 2, 3];
    }).map((x) => x * 10);
    expect(await ds.toArray()).toEqual([10, 20, 30]);
    expect(await ds.toArray()).toEqual([10, 20, 30]);
    expect(calls).toBe(2);
  });

  it("fromTensors slices arrays and objects of tensors per sample, sharing memory", async () => {
    const a = tensor(range(12), [4, 3]);
    const b = tensor([0, 1, 2, 3], [4]);
    const rows = await Dataset.fromTensors({ xs: [a, b], ys: { out: b } }).toArray();
    expect(rows).toHaveLength(4);
    expect(rows[2].xs[0].shape).toEqual([3]);
    expect(Array.from(rows[2].xs[0].data)).toEqual([6, 7, 8]);
    expect(rows[2].xs[1].shape).toEqual([]);
    expect(rows[3].ys.out.data[0]).toBe(3);
    expect(rows[1].xs[0].data.buffer).toBe(a.data.buffer);
  });

  it("fromTensors rejects tensors that disagree on the number of samples", () => {
    expect(() => Dataset.fromTensors({ xs: tensor([1, 2, 3], [3]), ys: tensor([1, 2], [2]) })).toThrow(
      /same first dimension, got 3 and 2/,
    );
    expect(() => Dataset.fromTensors({ xs: "nope" } as never)).toThrow(/expected Tensors/);
  });
});

describe("Dataset.batch", () => {
  it("stacks nested per-sample elements leaf by leaf along a new first axis", async () => {
    const x = tensor(range(14), [7, 2]);
    const y = tensor(range(7), [7]);
    const batches = await Dataset.fromTensors({ xs: { a: x, b: [x, y] }, ys: y })
      .batch(3)
      .toArray();
    expect(batches.map((b) => b.xs.a.shape)).toEqual([
      [3, 2],
      [3, 2],
      [1, 2],
    ]);
    expect(batches[1].xs.b[1].shape).toEqual([3]);
    expect(Array.from(batches[1].xs.b[0].data)).toEqual([6, 7, 8, 9, 10, 11]);
    expect(Array.from(batches[2].ys.data)).toEqual([6]);
    const dropped = await Dataset.fromTensors({ xs: x, ys: y }).batch(3, { dropRemainder: true }).toArray();
    expect(dropped).toHaveLength(2);
  });

  it("stacks numbers, Float32Arrays and tensors", async () => {
    const [b] = await Dataset.fromGenerator(() =>
      range(4).map((i) => ({ n: i, f: Float32Array.of(i, -i), t: new Tensor(Float32Array.of(i, i, i, i), [2, 2]) })),
    )
      .batch(4)
      .toArray();
    expect(b.n).toBeInstanceOf(Tensor);
    expect(b.n.shape).toEqual([4]);
    expect(Array.from(b.n.data)).toEqual([0, 1, 2, 3]);
    expect(b.f.shape).toEqual([4, 2]);
    expect(Array.from(b.f.data)).toEqual([0, -0, 1, -1, 2, -2, 3, -3]);
    expect(b.t.shape).toEqual([4, 2, 2]);
    expect(b.t.data[12]).toBe(3);
  });

  it("names the leaf and sample when shapes or structures differ", async () => {
    const ragged = Dataset.fromGenerator(() => [{ xs: Float32Array.of(1, 2) }, { xs: Float32Array.of(1) }]).batch(2);
    await expect(ragged.toArray()).rejects.toThrow(/element\.xs has shape \[1\] in sample 1 but \[2\] in sample 0/);
    const missing = Dataset.fromGenerator(() => [{ xs: 1, ys: 2 }, { xs: 1 }] as { xs: number; ys: number }[]).batch(2);
    await expect(missing.toArray()).rejects.toThrow(/element\.ys is missing in sample 1/);
    const strings = Dataset.fromGenerator(() => ["a", "b"]).batch(2);
    await expect(strings.toArray()).rejects.toThrow(/batch stacks Tensors/);
  });
});

describe("Dataset.shuffle", () => {
  it("is a seeded, deterministic permutation that changes every pass", async () => {
    const make = () => Dataset.fromGenerator(() => range(50)).shuffle(50, { seed: 42 });
    const ds = make();
    const first = await ds.toArray();
    const second = await ds.toArray();
    expect([...first].sort((a, b) => a - b)).toEqual(range(50));
    expect(first).not.toEqual(range(50));
    expect(second).not.toEqual(first);
    // Another dataset with the same seed replays the same sequence of permutations.
    const again = make();
    expect(await again.toArray()).toEqual(first);
    expect(await again.toArray()).toEqual(second);
    const other = await Dataset.fromGenerator(() => range(50))
      .shuffle(50, { seed: 43 })
      .toArray();
    expect(other).not.toEqual(first);
  });

  it("keeps one order with reshuffleEachIteration: false", async () => {
    const ds = Dataset.fromGenerator(() => range(20)).shuffle(8, { seed: 7, reshuffleEachIteration: false });
    expect(await ds.toArray()).toEqual(await ds.toArray());
  });

  it("holds at most bufferSize elements: a small buffer only reorders locally", async () => {
    const { ds, produced } = counted(1000);
    const it = ds.shuffle(10, { seed: 1 })[Symbol.asyncIterator]();
    await it.next();
    expect(produced()).toBe(11);
    const rest = [];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    expect(rest).toHaveLength(999);
    // Element i cannot come out before position i - bufferSize.
    rest.forEach((v, i) => {
      expect(v).toBeLessThanOrEqual(i + 1 + 10);
    });
  });
});

describe("Dataset.prefetch", () => {
  it("works ahead of a slow consumer but never more than n elements ahead", async () => {
    const { ds, produced } = counted(30);
    const n = 3;
    const seen: number[] = [];
    for await (const v of ds.prefetch(n)) {
      seen.push(v);
      expect(produced()).toBeLessThanOrEqual(seen.length + n);
      await sleep(5); // The "training step": the producer fills the buffer meanwhile.
      expect(produced()).toBe(Math.min(30, seen.length + n));
    }
    expect(seen).toEqual(range(30));
  });

  it("stops pulling when the consumer stops", async () => {
    const { ds, produced } = counted(100);
    for await (const v of ds.prefetch(4)) if (v === 9) break;
    await sleep(10);
    expect(produced()).toBeLessThanOrEqual(14);
  });
});

describe("take, skip, repeat, map, filter", () => {
  it("take stops reading the source; skip drops the head", async () => {
    const { ds, produced } = counted(100);
    expect(await ds.take(5).toArray()).toEqual([0, 1, 2, 3, 4]);
    expect(produced()).toBe(5);
    expect(await ds.skip(97).toArray()).toEqual([97, 98, 99]);
    expect(await ds.take(0).toArray()).toEqual([]);
  });

  it("repeat makes fresh passes; endless repeat of an empty set ends", async () => {
    const ds = Dataset.fromGenerator(() => [1, 2]);
    expect(await ds.repeat(3).toArray()).toEqual([1, 2, 1, 2, 1, 2]);
    expect(await ds.repeat().take(5).toArray()).toEqual([1, 2, 1, 2, 1]);
    expect(
      await Dataset.fromGenerator(() => [])
        .repeat()
        .toArray(),
    ).toEqual([]);
  });

  it("map and filter accept async functions", async () => {
    const ds = Dataset.fromGenerator(() => range(10))
      .filter(async (x) => x % 2 === 0)
      .map(async (x) => {
        await sleep(1);
        return x * x;
      });
    expect(await ds.toArray()).toEqual([0, 4, 16, 36, 64]);
  });

  it("rejects bad counts", () => {
    const ds = Dataset.fromGenerator(() => [1]);
    expect(() => ds.batch(0)).toThrow(RangeError);
    expect(() => ds.take(-1)).toThrow(RangeError);
    expect(() => ds.prefetch(1.5)).toThrow(RangeError);
    expect(() => ds.shuffle(4, { seed: -1 })).toThrow(RangeError);
  });
});

describe("errors", () => {
  class SourceError extends Error {}

  it("propagate from the source to the consumer unchanged, through every transformation", async () => {
    const boom = new SourceError("disk on fire");
    const ds = Dataset.fromGenerator(async function* () {
      for (let i = 0; i < 10; i++) {
        if (i === 6) throw boom;
        yield i;
      }
    })
      .map((x) => x + 1)
      .filter(() => true)
      .shuffle(2, { seed: 3 })
      .batch(2)
      .prefetch(2)
      .repeat(2);
    const got: unknown[] = [];
    let caught: unknown;
    try {
      for await (const b of ds) got.push(b);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBe(boom);
    expect(got.length).toBeGreaterThan(0);
  });

  it("from a map function, after the elements before it", async () => {
    const ds = Dataset.fromGenerator(() => range(5))
      .map((x) => {
        if (x === 3) throw new SourceError(`bad ${x}`);
        return x;
      })
      .prefetch(3);
    const got: number[] = [];
    await expect(
      (async () => {
        for await (const x of ds) got.push(x);
      })(),
    ).rejects.toThrow("bad 3");
    expect(got).toEqual([0, 1, 2]);
  });

  it("when the generator function returns something not iterable", async () => {
    await expect(Dataset.fromGenerator(() => 5 as never).toArray()).rejects.toThrow(/must return an iterable/);
  });
});
