/**
 * What the demo tells: a plain-language summary of what its figures show (phrased from the
 * measured numbers, never assumed), with the caveats of a `--quick` run, and `results/README.md`
 * (tables, the ξ and NTK figures embedded, the settings and the seed).
 */
import type { AdditionResult, NegationResult } from './eval/evaluate';

export interface StoryInput {
  quick: boolean;
  addition: Pick<AdditionResult, 'regime' | 'chosenAlpha' | 'test'>[];
  negation: Pick<NegationResult, 'regime' | 'meanTargetTest' | 'meanControlTest'>[];
  xi: Array<{ mode: 'nonlinear' | 'linear'; meanXi: number; lowErrorFraction: number }>;
  ntk: { meanMaxEnergy: number; tasks: number; topK: number };
  tasks: string[];
  fineTuneSteps: number;
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** The summary, one paragraph per finding, each stating the numbers it rests on. */
export function demoSummary(s: StoryInput): string[] {
  const out: string[] = [];
  const add = new Map(s.addition.map((r) => [r.regime, r]));
  const neg = new Map(s.negation.map((r) => [r.regime, r]));
  const nl = add.get('nonlinear');
  const lin = add.get('linear');
  if (nl && lin) {
    const normBetter = lin.test.meanNorm > nl.test.meanNorm;
    const absBetter = lin.test.meanAbs > nl.test.meanAbs;
    out.push(
      `Task addition (one model for ${s.tasks.length} tasks: θ0 + α Σ τ_t): linear fine-tuning reached a normalized accuracy of ${pct(lin.test.meanNorm)} against ${pct(nl.test.meanNorm)} for standard fine-tuning — ` +
        (normBetter ? 'its task vectors interfere less when added, as the paper finds' : 'here it did NOT interfere less, unlike in the paper') +
        `. On absolute accuracy linear FT scored ${pct(lin.test.meanAbs)} against ${pct(nl.test.meanAbs)}` +
        (absBetter ? '.' : ': normalized accuracy divides by each mode’s own single-task accuracy, and linear FT reaches lower single-task accuracy, so it can lead on one measure and trail on the other.'),
    );
  }
  const nn = neg.get('nonlinear');
  const ln = neg.get('linear');
  if (nn && ln)
    out.push(
      `Task negation (forgetting one task, θ0 − α τ_t, while the control task keeps ≥ 95% of its accuracy): the negated tasks' accuracy fell to ${pct(ln.meanTargetTest)} with linear FT and ${pct(nn.meanTargetTest)} with standard FT ` +
        `(control ${pct(ln.meanControlTest)} and ${pct(nn.meanControlTest)}) — ${ln.meanTargetTest < nn.meanTargetTest ? 'linear task vectors remove a task more cleanly' : 'standard task vectors removed it as well or better here'}.`,
    );
  const xn = s.xi.find((x) => x.mode === 'nonlinear');
  const xl = s.xi.find((x) => x.mode === 'linear');
  if (xn && xl)
    out.push(
      `Weight disentanglement (the heatmaps): ξ(α1, α2) measures how much adding two task vectors changes each task's predictions compared with adding each alone (0 = no interference). Mean ξ was ${xl.meanXi.toFixed(2)} for linear FT against ${xn.meanXi.toFixed(2)} for standard FT ` +
        `(ξ ≤ 0.1 on ${pct(xl.lowErrorFraction)} vs ${pct(xn.lowErrorFraction)} of the grid): ${xl.meanXi < xn.meanXi ? 'linear task vectors are more disentangled, which is why they add and subtract better' : 'no disentanglement advantage for linear FT in this run'}.`,
    );
  out.push(
    `NTK eigenfunctions (the bar chart): the top ${s.ntk.topK} eigenfunctions of the kernel at θ0 hold on average ${pct(s.ntk.meanMaxEnergy)} of their energy on a single task, against ${pct(1 / s.ntk.tasks)} for an even spread — ` +
      (s.ntk.meanMaxEnergy > 1.5 / s.ntk.tasks ? 'they are localized on tasks, the property the paper ties to disentanglement.' : 'only weak localization at this scale (the paper sees it for CLIP-sized pre-training).'),
  );
  if (s.quick)
    out.push(
      `This was the --quick run (${s.fineTuneSteps} fine-tuning steps per task, small validation and test subsets): it shows the pipeline working end to end, but differences of a few points between regimes are within its noise, and it cannot show the full run's gaps (README, "What npm run demo does"). Run \`npm run demo\` without --quick for those.`,
    );
  return out;
}

/** results/README.md: what was run, the summary, the tables and the figures. */
export function resultsReadme(o: { quick: boolean; summary: string[]; markdown: string; settings: Record<string, unknown>; seed: number; libtorch: string; threads: number; seconds: number; date: string }): string {
  return [
    `# tangent-edit demo results${o.quick ? ' (--quick)' : ''}`,
    '',
    `Produced by \`tangent demo${o.quick ? ' --quick' : ''}\` on ${o.date} in ${o.seconds.toFixed(0)} s (libtorch ${o.libtorch}, ${o.threads} threads). Seeds: ${o.seed} for the initialization, the train/validation split and the batch order; the seeded subsets of the splits use seed 1.`,
    '',
    '## What it shows',
    '',
    ...o.summary.flatMap((p) => [p, '']),
    '## Tables',
    '',
    'Accuracies in %, on the test split, at the α chosen on validation. Regimes: non-linear = standard fine-tuning, task vectors applied to f; post-hoc = the same task vectors evaluated in the linearized model f_lin; linear = fine-tuning inside f_lin.',
    '',
    o.markdown,
    '',
    '## Figures',
    '',
    'Weight disentanglement error ξ(α1, α2) of the first two tasks (lower is better; left: standard FT, right: linear FT):',
    '',
    '![weight disentanglement](disentanglement.png)',
    '',
    'Local energy of the top NTK eigenfunctions at θ0 on each task (one colour per task):',
    '',
    '![NTK eigenfunctions](ntk.png)',
    '',
    '## Settings',
    '',
    '```json',
    JSON.stringify(o.settings, null, 2),
    '```',
    '',
    'Files: protocol.md / protocol.json (every α), disentanglement.json, ntk.json, demo.json; the checkpoints in work/.',
    '',
  ].join('\n');
}
