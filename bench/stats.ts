/** Timing helpers: warm-up, then the median of `reps` runs (milliseconds). */
export async function median(fn: () => Promise<unknown>, reps: number, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const s = performance.now();
    await fn();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)]!;
}

/** Medians of several functions measured interleaved (round robin), so drift hits all alike. */
export async function mediansInterleaved(fns: Record<string, () => Promise<unknown>>, reps: number, warmup = 2): Promise<Record<string, number>> {
  const names = Object.keys(fns);
  for (let i = 0; i < warmup; i++) for (const n of names) await fns[n]!();
  const t: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < reps; i++)
    for (const n of names) {
      const s = performance.now();
      await fns[n]!();
      t[n]!.push(performance.now() - s);
    }
  return Object.fromEntries(names.map((n) => [n, t[n]!.sort((a, b) => a - b)[Math.floor(reps / 2)]!]));
}

export const fmt = (ms: number): string => `${ms.toFixed(1)} ms`;
