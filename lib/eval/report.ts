/** Markdown tables of the paper's figures. */
import type { AdditionResult, NegationResult, SingleTaskRow } from './evaluate';

const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '—' : (100 * v).toFixed(1));

const REGIME_NAME: Record<string, string> = { nonlinear: 'Non-linear FT', posthoc: 'Post-hoc linearization', linear: 'Linear FT' };

export function singleTaskTable(rows: readonly SingleTaskRow[], split = 'test'): string {
  const out = [
    `Single-task ${split} accuracy (%)`,
    '',
    '| task | pre-trained | standard FT | post-hoc linearized | linear FT |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) out.push(`| ${r.task} | ${pct(r.pretrained)} | ${pct(r.standard)} | ${pct(r.posthoc)} | ${pct(r.linear)} |`);
  const m = (k: keyof SingleTaskRow) => {
    const v = rows.map((r) => r[k]).filter((x): x is number => typeof x === 'number');
    return v.length === rows.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  out.push(`| **mean** | ${pct(m('pretrained'))} | ${pct(m('standard'))} | ${pct(m('posthoc'))} | ${pct(m('linear'))} |`);
  return out.join('\n');
}

export function additionTable(results: readonly AdditionResult[]): string {
  if (results.length === 0) return '';
  const tasks = results[0]!.tasks;
  const out = [
    'Task addition: θ0 + α Σ τ_t, α chosen on validation (mean normalized accuracy), test accuracy (%)',
    '',
    `| method | α | abs. | norm. | ${tasks.join(' | ')} |`,
    `| --- | ---: | ---: | ---: | ${tasks.map(() => '---:').join(' | ')} |`,
  ];
  for (const r of results)
    out.push(`| ${REGIME_NAME[r.regime] ?? r.regime} | ${r.chosenAlpha.toFixed(2)} | ${pct(r.test.meanAbs)} | ${pct(r.test.meanNorm)} | ${tasks.map((t) => pct(r.test.acc[t])).join(' | ')} |`);
  return out.join('\n');
}

export function negationTable(results: readonly NegationResult[]): string {
  if (results.length === 0) return '';
  const tasks = Object.keys(results[0]!.tasks);
  const r0 = results[0]!;
  const out = [
    `Task negation: θ0 − α τ_t, α chosen on validation (min target s.t. ${r0.control} ≥ ${r0.ratio} × pre-trained), test accuracy (%)`,
    '',
    `| method | target (mean) | control (mean) | ${tasks.map((t) => `${t} target / α`).join(' | ')} |`,
    `| --- | ---: | ---: | ${tasks.map(() => '---:').join(' | ')} |`,
    `| Pre-trained | ${pct(tasks.reduce((a, t) => a + r0.tasks[t]!.pretrainedTargetTest, 0) / tasks.length)} | ${pct(r0.pretrainedControl.test)} | ${tasks.map((t) => `${pct(r0.tasks[t]!.pretrainedTargetTest)} / 0`).join(' | ')} |`,
  ];
  for (const r of results)
    out.push(
      `| ${REGIME_NAME[r.regime] ?? r.regime} | ${pct(r.meanTargetTest)} | ${pct(r.meanControlTest)} | ${tasks.map((t) => `${pct(r.tasks[t]!.test.target)} / ${r.tasks[t]!.chosen.alpha.toFixed(2)}`).join(' | ')} |`,
    );
  return out.join('\n');
}
